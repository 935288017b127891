"""Decoding shared by every engine: sampling, stopping, RoPE scaling, speculative decoding, chat history.

Engines only supply "feed these ids, give me the next-token logits"; everything that decides
*which* token comes next and *when* to stop lives here once, so `chat`, `serve` and `eval`
behave the same whichever backend runs the model.
"""
