"""`zhllama quantize METHOD` and `zhllama quantize compare`: the work behind the commands.

- `quantize(method, model, output, options, eval_ppl, ppl_context, force)`: everything is checked
  before the first byte is written (in this order: the plugin, the model source, the output guard
  against every input, the plugin's own checks, the --eval-ppl text); the output is written
  atomically (a file or a folder, as the plugin declares), then the report (and PPL) is measured
  and written beside it. Returns the `QuantizeReport`.
- `compare_types(...)`: `quantize compare`: checks (types, --max-tokens, model, output guard, the
  inputs) before anything is written, then the compare run in an atomic output folder. Returns the
  `compare.Comparison`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from zhllama.core import registry
from zhllama.core.errors import UserError

if TYPE_CHECKING:
    from zhllama.core.quantize.compare import Comparison
    from zhllama.core.quantize.report import QuantizeReport


def quantize(
    method: str, model: str, output: Path, options, eval_ppl: Path | None, ppl_context: int, force: bool
) -> QuantizeReport:
    """Validate everything, write the quantized output atomically, then report (and measure PPL)."""
    from zhllama.core.atomic import atomic_dir, atomic_path, check_output_dir
    from zhllama.core.checkpoint.sources import resolve_model
    from zhllama.core.paths import check_output
    from zhllama.core.quantize.report import QuantizeReport, check_ppl_data, measure_ppl, weights_size

    plugin = registry.load("quantizers", method)()
    model = resolve_model(model, folder_only=True)  # hub ids and Meta/TencentPretrain folders too
    inputs = [model, eval_ppl, *(v for v in getattr(options, "__dict__", {}).values() if isinstance(v, Path))]
    check_output(output, inputs)  # never an input (model, --eval-ppl, --calibration ...), inside or containing one
    plugin.validate(model, options)
    if eval_ppl is not None:
        check_ppl_data(eval_ppl, ppl_context)  # before the first byte is written
    start = time.perf_counter()
    if plugin.output_is_file:
        if output.is_dir():
            raise UserError(f"{output}: is a folder; {method} writes a single file")
        with atomic_path(output, force=force) as tmp:
            plugin.quantize(model, tmp, options)
        report_path = output.with_name(output.name + ".quantize_report.json")
    else:
        check_output_dir(output, force)
        with atomic_dir(output, force=force) as tmp:
            plugin.quantize(model, tmp, options)
        report_path = output / "quantize_report.json"
    report = QuantizeReport(
        method,
        str(model),
        str(output),
        plugin.settings(options),
        weights_size(model),
        weights_size(output),
        time.perf_counter() - start,
    )
    if eval_ppl is not None:
        measure_ppl(report, model, output, eval_ppl, ppl_context)  # one backend for before and after
    report.write(report_path)
    return report


def compare_types(
    model: str,
    types: str,
    data: Path,
    output: Path,
    base: str = "F16",
    context: int = 512,
    max_tokens: int | None = None,
    imatrix: Path | None = None,
    imatrix_data: Path | None = None,
    keep_files: bool = False,
    force: bool = False,
) -> Comparison:
    """Size, PPL, KL-divergence and top-1 agreement of GGUF types against the unquantized model."""
    import shutil
    import tempfile

    from zhllama.core.atomic import atomic_dir, check_output_dir
    from zhllama.core.checkpoint.sources import resolve_model
    from zhllama.core.paths import check_output
    from zhllama.core.quantize import compare

    variants = compare.parse_types(types)
    if max_tokens is not None and max_tokens < 2:
        raise UserError(f"--max-tokens: {max_tokens} must be at least 2")
    model_dir = resolve_model(model, folder_only=True)
    check_output(output, [model_dir, data, imatrix, imatrix_data])
    check_output_dir(output, force)
    calibration = compare.check_inputs(model_dir, data, variants, base.upper(), context, imatrix, imatrix_data)
    with atomic_dir(output, force=force) as tmp:
        work = tmp if keep_files else Path(tempfile.mkdtemp(dir=tmp, prefix=".gguf-"))
        try:
            result = compare.compare(
                model_dir, data, variants, work, base.upper(), context, max_tokens, imatrix, calibration
            )
        finally:
            if not keep_files:
                shutil.rmtree(work, ignore_errors=True)
        if not keep_files and result.imatrix.get("file", "").startswith(str(work)):
            result.imatrix["file"] = None  # computed in the removed work folder
        compare.write_outputs(result, tmp)
    return result
