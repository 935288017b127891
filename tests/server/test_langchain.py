"""The README's LangChain recipe against `zhllama serve`: retrieval with /v1/embeddings, then an answer."""

from __future__ import annotations

import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message, get_template
from zhllama.server import create_app

NAME = "tiny-zh"
PARAGRAPHS = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心，有故宫、天坛和长城等名胜古迹。",
    "上海位于长江入海口，是中国最大的经济中心和港口城市之一，外滩和陆家嘴闻名世界。",
    "大熊猫主要生活在四川、陕西和甘肃的山区，以竹子为主要食物，是中国的国宝。",
    "春节是中国最重要的传统节日，人们会贴春联、放鞭炮、吃饺子，和家人团聚。",
]
QUESTION = "中国的首都有哪些名胜古迹？"


@pytest.fixture(scope="module")
def url(served_model, live_server):
    runtime = ChatRuntime(served_model, get_template("llama2-zh"), NAME)
    with live_server(create_app(runtime, GenerationParams(max_new_tokens=32))) as base:
        yield base, runtime


def test_document_qa_recipe(url):
    pytest.importorskip("langchain_openai")
    import torch
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    base, runtime = url
    embeddings = OpenAIEmbeddings(base_url=f"{base}/v1", api_key="unused", model=NAME, check_embedding_ctx_length=False)
    store = InMemoryVectorStore.from_texts(PARAGRAPHS, embedding=embeddings)
    found = store.similarity_search(QUESTION, k=2)

    def vector(text):  # the server's pooling, computed here independently
        ids = torch.tensor([runtime.model.tokenizer.encode(text, bos=True)])
        with torch.no_grad():
            hidden = runtime.model.model(ids, output_hidden_states=True).hidden_states[-1][0].mean(dim=0)
        return hidden / hidden.norm()

    query = vector(QUESTION)
    ranking = sorted(PARAGRAPHS, key=lambda p: -float(vector(p) @ query))
    assert [d.page_content for d in found] == ranking[:2]

    llm = ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model=NAME, temperature=0, max_tokens=24)
    context = "\n".join(d.page_content for d in found)
    system = "请根据参考资料回答问题。"
    user = f"参考资料：\n{context}\n\n问题：{QUESTION}"
    answer = llm.invoke([SystemMessage(system), HumanMessage(user)])
    ids = runtime.prompt_ids([Message("system", system), Message("user", user)])
    expected = runtime.reply(ids, GenerationParams(max_new_tokens=24, temperature=0, greedy=True)).run()
    assert answer.content == expected and answer.usage_metadata["output_tokens"] == 24
    streamed = "".join(chunk.content for chunk in llm.stream([SystemMessage(system), HumanMessage(user)]))
    assert streamed == expected
