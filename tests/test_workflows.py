"""The shipped workflows: they validate as ComfyUI would load them, and they run headless with tiny models
through the same node classes (``python -m semanticgen``), writing real files. Also: the runner's errors,
interruption, and a second run that loads no model again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def count_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    return count


def test_the_example_workflows_ship():
    assert [p.stem for p in WORKFLOWS] == ["best_of_n_videos", "edit_plan_then_render", "long_multi_shot",
                                           "save_plan_then_render", "text_to_video", "video_to_plan_rerender"]
    assert (ROOT / "workflows" / "media" / "semanticgen_example.mp4").is_file()


def test_workflow_files_match_their_generator(pack):
    from semanticgen.build_workflows import BUILDERS

    for path in WORKFLOWS:
        assert load(path) == json.loads(json.dumps(BUILDERS[path.stem]())), \
            f"{path.name} differs from semanticgen/build_workflows.py: run python -m semanticgen.build_workflows"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_template_has_its_thumbnail_and_description(path):
    """What the template browser shows: ComfyUI serves workflows/ and the frontend asks for <name>.jpg beside
    the JSON; the title and one-line description live in the workflow's extra.template."""
    import cv2

    thumb = path.with_suffix(".jpg")
    data = thumb.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9", f"{thumb.name} is not a JPEG"
    assert 1000 < len(data) < 16_000, f"{thumb.name}: {len(data)} bytes"
    image = cv2.imread(str(thumb))
    assert image is not None and image.shape == (256, 256, 3)
    assert image.std() > 5, f"{thumb.name} is blank"
    template = load(path)["extra"]["template"]
    assert set(template) == {"title", "description", "thumbnail"} and template["thumbnail"] == thumb.name
    assert template["title"] and template["title"] != path.stem
    description = template["description"]
    assert description.endswith(".") and "\n" not in description and 30 < len(description) <= 120, description


def test_thumbnails_and_descriptions_cover_exactly_the_workflows():
    from semanticgen.build_workflows import BUILDERS, TEMPLATES

    folder = ROOT / "workflows"
    assert sorted(p.stem for p in folder.glob("*.jpg")) == [p.stem for p in WORKFLOWS]
    assert set(TEMPLATES) == set(BUILDERS) == {p.stem for p in WORKFLOWS}
    # ComfyUI lists every workflows/*.json as a template: an index.json there would show as one
    assert not (folder / "index.json").exists()
    assert len({t for t, _ in TEMPLATES.values()}) == len(TEMPLATES)


def test_thumbnail_grid_puts_four_frames_in_reading_order():
    import torch

    from semanticgen.build_workflows import THUMB_SIZE, thumbnail_image

    colours = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
    frames = [torch.tensor(c, dtype=torch.float32).expand(64, 64, 3) for c in colours]
    image = thumbnail_image(frames)
    assert image.shape == (THUMB_SIZE, THUMB_SIZE, 3)
    q = THUMB_SIZE // 4
    for (y, x), (r, g, b) in zip([(q, q), (q, 3 * q), (3 * q, q), (3 * q, 3 * q)], colours):
        assert list(image[y, x]) == [255 * b, 255 * g, 255 * r]  # BGR, as cv2 writes it


def test_the_generator_renders_the_shipped_thumbnail(pack):
    """text_to_video's thumbnail again (the cheapest: 33 frames, 8 steps): the same picture, up to float
    differences between CPUs and JPEG."""
    import cv2
    import numpy as np

    from semanticgen.build_workflows import thumbnail_frames, thumbnail_image

    fresh = thumbnail_image(thumbnail_frames("text_to_video")).astype(np.float32)
    shipped = cv2.imread(str(ROOT / "workflows" / "text_to_video.jpg")).astype(np.float32)
    assert np.abs(fresh - shipped).mean() < 4.0
    other = cv2.imread(str(ROOT / "workflows" / "long_multi_shot.jpg")).astype(np.float32)
    assert np.abs(fresh - other).mean() > 20.0  # the tolerance tells thumbnails apart


def test_the_generator_renders_only_missing_thumbnails(pack, tmp_path, monkeypatch):
    from semanticgen import build_workflows as bw

    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "semanticgen_example.mp4").write_bytes(b"")
    for name in bw.BUILDERS:
        if name != "save_plan_then_render":
            (tmp_path / f"{name}.jpg").write_bytes(b"old")
    rendered = []
    monkeypatch.setattr(bw, "WORKFLOWS", tmp_path)
    monkeypatch.setattr(bw, "write_thumbnail", lambda name, pipe: rendered.append(name) or name)
    monkeypatch.setattr("semanticgen_core.pipeline.SemanticGenPipeline.embedded", classmethod(lambda cls, **k: "pipe"))
    bw.main([])
    assert rendered == ["save_plan_then_render"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(f"{n}.json" for n in bw.BUILDERS)
    bw.main(["--thumbnails"])
    assert rendered[1:] == list(bw.BUILDERS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_is_valid_ui_format(pack, path):
    from semanticgen.runner import input_specs, types_match, widget_layout

    wf = load(path)
    assert wf["version"] == 0.4 and wf["groups"] and wf["last_node_id"] == max(n["id"] for n in wf["nodes"])
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert any(n["type"] == "MarkdownNote" for n in wf["nodes"]), "explain the two stages in a note"
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        cls = pack.NODE_CLASS_MAPPINGS[node["type"]]  # the node type exists
        assert len(node["widgets_values"]) == len(widget_layout(cls)), node["type"]
        assert [o["type"] for o in node["outputs"]] == list(cls.RETURN_TYPES)
        specs = {s.name: s for s in input_specs(cls)}
        for inp in node["inputs"]:
            assert specs[(inp.get("widget") or {}).get("name", inp["name"])].type == inp["type"]
        models = node["properties"].get("models", [])
        # The frontend's schema requires name, url and directory; every loader of a part with published
        # real weights names where they go (stage 1 and the aligner have none yet: their tooltips say where a
        # file goes).
        assert all(m["name"] and m["url"].startswith("https://") and m["directory"] for m in models)
        if node["type"].endswith("Loader") and node["type"] not in ("SemanticGenStage1Loader",
                                                                    "SemanticGenAlignerLoader"):
            assert models, node["type"]
    for link_id, src, src_slot, dst, dst_slot, link_type in wf["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert types_match(out["type"], link_type) and types_match(inp["type"], link_type), (link_id, link_type)
    for node in wf["nodes"]:  # nothing overlaps: people read these
        x, y, w, h = *node["pos"], *node["size"]
        for other in wf["nodes"]:
            if other is not node:
                ox, oy, ow, oh = *other["pos"], *other["size"]
                assert x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y, (node["id"], other["id"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_headless(pack, tiny_models, tiny_sets, path):
    from semanticgen import runner

    api = runner.to_api(load(path))
    assert all(n["inputs"] for n in api.values())
    sets = tiny_sets(api, tiny_models)
    result = runner.run(path, sets=sets)
    videos = [f for f in result.files if f.suffix == ".mp4"]
    length = next((v for k, v in sets.items() if k.endswith(".length")), 9)  # 61 for the 60 s multi-shot one
    assert len(videos) == 1 and count_frames(videos[0]) == length
    if path.stem == "save_plan_then_render":
        from semanticgen_core.plan import SemanticPlan

        (plan_file,) = [f for f in result.files if f.suffix == ".safetensors"]
        assert SemanticPlan.load(plan_file).num_frames == 9
    titles = [r.title for r in result.runs]
    assert titles[-1] == ("Decode to video" if path.stem == "long_multi_shot" else "Save video")  # streamed
    assert len(set(titles)) == len(titles)


def test_core_nodes_and_types_against_core_object_info(pack, shared_dir):
    """Our ids and custom types do not clash with core ComfyUI's; our IMAGE and LATENT are core types;
    any core node a workflow uses exists in core with the widgets we give it."""
    from semanticgen.runner import VIRTUAL_TYPES

    info = json.loads((shared_dir / "comfyui" / "core_object_info.json").read_text())
    assert not set(pack.NODE_CLASS_MAPPINGS) & set(info)
    core_types = {t for d in info.values() for t in d["output"] if isinstance(t, str)}
    core_types |= {spec[0] for d in info.values() for section in d["input"].values() if isinstance(section, dict)
                   for spec in section.values() if isinstance(spec[0], str)}
    ours = {t for cls in pack.NODE_CLASS_MAPPINGS.values() for t in cls.RETURN_TYPES}
    assert {"IMAGE", "LATENT"} <= ours and {"IMAGE", "LATENT"} <= core_types
    assert info["VAEDecode"]["input"]["required"]["samples"][0] == "LATENT"
    assert info["SaveAnimatedWEBP"]["input"]["required"]["images"][0] == "IMAGE"
    custom = ours - {"IMAGE", "LATENT", "FLOAT", "INT", "STRING"}
    assert custom and not custom & core_types, custom & core_types
    for path in WORKFLOWS:
        for node in load(path)["nodes"]:
            if node["type"] in pack.NODE_CLASS_MAPPINGS or node["type"] in VIRTUAL_TYPES:
                continue
            assert node["type"] in info, f"{path.name}: {node['type']} is neither ours nor a core node"
            required = info[node["type"]]["input"].get("required", {})
            widgets = [k for k, v in required.items() if isinstance(v[0], list) or v[0] in
                       ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
            assert len(node["widgets_values"]) >= len(widgets), node["type"]


# -- the runner's conversion and errors --------------------------------------------------------------


def test_seed_control_value_is_skipped_and_links_become_inputs(pack):
    from semanticgen.runner import to_api

    wf = load(ROOT / "workflows" / "text_to_video.json")
    stage1 = next(n for n in wf["nodes"] if n["type"] == "SemanticGenStage1Sample")
    stage1["widgets_values"][6] = 1234  # width, height, length, fps, steps... seed is the 5th widget
    stage1["widgets_values"][4] = 77
    api = to_api(wf)
    inputs = api[str(stage1["id"])]["inputs"]
    assert inputs["seed"] == 77 and inputs["steps"] == 1234 and "fixed" not in inputs.values()
    assert inputs["stage1"] == ["4", 0] and api[str(stage1["id"])]["_meta"]["title"] == "Stage 1: plan"
    assert not any(n["class_type"] == "MarkdownNote" for n in api.values())


def broken(edit) -> dict:
    wf = load(ROOT / "workflows" / "text_to_video.json")
    edit(wf)
    return wf


def node_of(wf, node_type):
    return next(n for n in wf["nodes"] if n["type"] == node_type)


def test_unknown_node_type_is_named(pack):
    from semanticgen.runner import WorkflowError, to_api

    wf = broken(lambda wf: node_of(wf, "SemanticGenVAEDecode").update(type="VAEDecodeTiled"))
    with pytest.raises(WorkflowError, match=r"node 10 'VAE decode' \(VAEDecodeTiled\): unknown node type"):
        to_api(wf)


def test_missing_input_is_named(pack):
    from semanticgen.runner import WorkflowError, to_api, validate

    wf = broken(lambda wf: wf["links"].pop())  # decode -> save
    node_of(wf, "SemanticGenSaveVideo")["inputs"][0]["link"] = None
    with pytest.raises(WorkflowError, match=r"node 11 'Save video' \(SemanticGenSaveVideo\): required input "
                                            r"'images' \(IMAGE\) is missing"):
        validate(to_api(wf))


def test_wrong_type_on_a_link_is_named(pack):
    from semanticgen.runner import WorkflowError, apply_sets, to_api, validate

    api = to_api(load(ROOT / "workflows" / "text_to_video.json"))
    api["9"]["inputs"]["plan"] = ["3", 0]  # the text encoder where stage 2 wants a plan
    with pytest.raises(WorkflowError, match=r"node 9 'Stage 2: render' \(SemanticGenStage2Sample\): input 'plan' "
                                            r"expects SEMANTIC_PLAN but is linked to a SEMANTICGEN_TEXT_ENCODER output"):
        validate(api)
    wf = load(ROOT / "workflows" / "text_to_video.json")
    wf["links"][0][5] = "LATENT"
    with pytest.raises(WorkflowError, match=r"link 1: its type LATENT differs from output 0 of node 3 'Text encoder'"):
        to_api(wf)
    with pytest.raises(WorkflowError, match=r"input 'steps': 0 is below the minimum 1"):
        validate(apply_sets(api | {"9": {**api["9"], "inputs": {**api["9"]["inputs"], "plan": ["8", 0]}}},
                            ["Stage 1: plan.steps=0"]))
    with pytest.raises(WorkflowError, match=r"has 2 widget values but SemanticGenSaveVideo takes 3 \(fps, filename_prefix, codec\)"):
        to_api(broken(lambda wf: node_of(wf, "SemanticGenSaveVideo")["widgets_values"].pop()))


def test_reroutes_are_followed_and_muted_nodes_dropped(pack):
    from semanticgen.runner import WorkflowError, to_api, validate

    wf = load(ROOT / "workflows" / "text_to_video.json")
    into_save = node_of(wf, "SemanticGenSaveVideo")["inputs"][0]["link"]
    at = next(i for i, link in enumerate(wf["links"]) if link[0] == into_save)
    decode_to_save = wf["links"][at]  # [id, decode, 0, save, 0, IMAGE]
    wf["nodes"].append({"id": 20, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "mode": 0,
                        "inputs": [{"name": "", "type": "*", "link": 30}],
                        "outputs": [{"name": "", "type": "IMAGE", "links": [31]}]})
    wf["links"][at] = [30, decode_to_save[1], 0, 20, 0, "IMAGE"]
    wf["links"].append([31, 20, 0, decode_to_save[3], 0, "IMAGE"])
    node_of(wf, "SemanticGenSaveVideo")["inputs"][0]["link"] = 31
    assert to_api(wf)["11"]["inputs"]["images"] == ["10", 0]
    node_of(wf, "SemanticGenVAEDecode")["mode"] = 2  # muted: not sent, and its consumer loses the input
    api = to_api(wf)
    assert "10" not in api and "images" not in api["11"]["inputs"]
    with pytest.raises(WorkflowError, match="required input 'images'"):
        validate(api)


def test_set_by_title_or_id_and_its_errors(pack):
    from semanticgen.runner import WorkflowError, apply_sets, to_api

    api = to_api(load(ROOT / "workflows" / "text_to_video.json"))
    out = apply_sets(api, ["Prompt.prompt=a blue star growing", "8.fps=16", "Stage 2: render.window_frames=0"])
    assert out["7"]["inputs"]["prompt"] == "a blue star growing" and out["8"]["inputs"]["fps"] == 16.0
    assert out["9"]["inputs"]["window_frames"] == 0
    with pytest.raises(WorkflowError, match="no node with id or title 'Nope'"):
        apply_sets(api, ["Nope.steps=1"])
    with pytest.raises(WorkflowError, match="has no input 'stepz'.*steps"):
        apply_sets(api, ["8.stepz=1"])


def test_missing_model_file_fails_validation_with_where_to_put_it(pack, tiny_models):
    from semanticgen import runner

    with pytest.raises(runner.WorkflowError, match=r"node 6 'VAE' \(SemanticGenVAELoader\): VAE file "
                                                   r"'wan_2.1_vae.safetensors' not found\. Put it in ComfyUI's models/vae"):
        runner.run("text_to_video", sets={"VAE.model_name": "wan_2.1_vae.safetensors"})


# -- interruption and the second run -----------------------------------------------------------------


def test_interrupt_stops_sampling_promptly_and_the_next_run_works(pack, tiny_models, tiny_sets):
    from semanticgen_core.errors import Interrupted
    from semanticgen import runner

    comfy = pack.nodes.comfy
    api = runner.to_api(runner.load_workflow("text_to_video"))
    sets = tiny_sets(api, tiny_models, steps=6)
    seen = []

    def interrupt_at_stage2_step2(what, step, total):
        seen.append((what, step))
        if (what, step) == ("stage 2", 2):
            comfy.request_interrupt()

    remove = comfy.add_progress_listener(interrupt_at_stage2_step2)
    try:
        with pytest.raises(Interrupted):
            runner.run("text_to_video", sets=sets)
    finally:
        remove()
    assert seen[-1] == ("stage 2", 2), seen  # not one step more, and no decoding
    result = runner.run("text_to_video", sets=sets)  # models are still usable
    assert count_frames(next(f for f in result.files if f.suffix == ".mp4")) == 9


def test_a_second_run_loads_no_model(pack, tiny_models, tiny_sets):
    from semanticgen import runner

    api = runner.to_api(runner.load_workflow("video_to_plan_rerender"))
    pack.nodes.model_cache.CACHE.clear()
    first = runner.run("video_to_plan_rerender", sets=tiny_sets(api, tiny_models))
    second = runner.run("video_to_plan_rerender", sets=tiny_sets(api, tiny_models))
    assert first.loads == 4 and second.loads == 0 and second.load_seconds == 0.0


def test_cli_generate_writes_the_video_and_prints_stage_times(pack, tiny_models, tmp_path, capsys):
    """``generate`` runs SemanticGenPipeline itself (no workflow), with the loaders' model choices."""
    from semanticgen import runner
    from semanticgen.cli import main

    out = tmp_path / "clips" / "star.mp4"
    models = ["--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae", tiny_models["vae"]]
    args = ["generate", "a purple star moving up", "--seconds", "1", "--seed", "3", "--steps", "2", "--guidance", "1.5",
            "--out", str(out), "--models", str(tiny_models["dir"]), "-q", *models]
    executed = []
    original = runner.execute
    runner.execute = lambda *a, **k: executed.append(a) or original(*a, **k)
    try:
        assert main(args) == 0
    finally:
        runner.execute = original
    assert not executed  # the pipeline, not a workflow
    printed = capsys.readouterr().out
    assert count_frames(out) == 9 and "9 frames at 8 fps, seed 3: 64x64, 2 steps, guidance 1.5" in printed
    for stage in ("load models", "Stage 1: plan", "Stage 2: render", "VAE decode", "total"):
        assert stage in printed
    assert not [p for p in out.parent.iterdir() if p.name != "star.mp4"]  # no partial file left
    assert main(["generate", "a purple star", "--width", "72", "--out", str(out), *models]) == 2  # before any load
    assert "semanticgen generate: --width 72 is not a multiple of 16" in capsys.readouterr().err
    assert main(["generate", "a purple star", "--out", str(out), "--stage2", "nope.safetensors",
                 "--models", str(tiny_models["dir"])]) == 2
    assert "stage-2 model file 'nope.safetensors' not found" in capsys.readouterr().err
    assert main(["run", "text_to_video", "--set", "Nope.x=1"]) == 2
    assert "no node with id or title 'Nope'" in capsys.readouterr().err


def test_cli_generate_makes_the_workflows_video(pack, tiny_models, tiny_sets, tmp_path):
    """The pipeline path and the workflow path are one method: same models, seed and settings, same video."""
    import cv2
    import numpy as np

    from semanticgen import runner
    from semanticgen.cli import main

    out = tmp_path / "cli.mp4"
    assert main(["generate", "a purple star moving up", "--seconds", "1", "--seed", "3", "--steps", "2", "--guidance",
                 "2.5", "--codec", "mp4v", "--out", str(out), "--models", str(tiny_models["dir"]), "-q", "--stage1",
                 tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae", tiny_models["vae"], "--aligner",
                 tiny_models["aligner"]]) == 0
    api = runner.to_api(runner.load_workflow("text_to_video"))
    sets = {**tiny_sets(api, tiny_models), "Prompt.prompt": "a purple star moving up", "Stage 1: plan.seed": 3,
            "Stage 2: render.seed": 3, "Save video.codec": "mp4v"}
    pack.nodes.comfy.configure(models=tiny_models["dir"])
    (video,) = [f for f in runner.run("text_to_video", sets=sets, output=tmp_path / "wf").files if f.suffix == ".mp4"]

    def frames(path):
        cap, got = cv2.VideoCapture(str(path)), []
        while (read := cap.read())[0]:
            got.append(read[1].astype(np.int16))
        return np.stack(got)

    # equal up to float rounding (the workflow's LATENT goes through core's raw layout and back), which the
    # lossy codec may turn into a few levels here and there
    diff = np.abs(frames(out) - frames(video))
    assert diff.mean() < 0.1 and diff.max() <= 8, (diff.mean(), diff.max())


def test_cli_threads_default_to_the_idle_cpus_and_refuse_zero(tmp_path, monkeypatch, capsys):
    """On 2 cores beside one busy process, torch's default of 2 threads made the first command 16.7 s instead
    of 6.5 s (bench/first_video.py): without --threads the command takes the CPUs nobody else is running on."""
    import torch

    from semanticgen import cli

    stat = tmp_path / "stat"
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for running, idle in ((1, 4), (2, 3), (3, 2), (9, 1)):  # procs_running counts this process too
        stat.write_text(f"cpu  1 2 3\nprocs_running {running}\nprocs_blocked 0\n")
        assert cli.idle_cpus(stat=str(stat)) == idle
    assert cli.idle_cpus(stat=str(tmp_path / "missing")) is None  # no /proc: torch's default stays
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(cli, "idle_cpus", lambda: 3)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        cli.set_threads(cli.build_parser().parse_args(["generate", "x"]))
        assert torch.get_num_threads() == 3
        cli.set_threads(cli.build_parser().parse_args(["eval", "--threads", "2"]))
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice wins over the idle CPUs
        cli.set_threads(cli.build_parser().parse_args(["run", "text_to_video"]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert cli.main(["generate", "x", "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
