"""bench/first_video.py with tiny settings: every row of both tables, positive figures (no timing targets)."""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import first_video  # noqa: E402


def test_first_video_bench_prints_both_tables_with_each_stages_share(tmp_path, capsys):
    out = tmp_path / "first.json"
    assert first_video.main(["--cold-runs", "1", "--warm-runs", "1", "--steps", "1", "--seconds", "0.5",
                             "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"load average [\d.]+, [\d.]+, [\d.]+ on \d+ cores before", text)
    cold, warm = text.split("\ncold: ")[1].split("\nwarm: ")
    cold_parts = (first_video.START, *first_video.STAGES)
    for part in cold_parts:
        assert re.search(rf"^  {re.escape(part)}\s+\d+\.\d\d s\s+\d+\.\d%$", cold, re.M), (part, cold)
    assert re.search(r"^  total\s+\d+\.\d\d s  target <= 5 s: (PASS|MISS)$", cold, re.M)
    for part in first_video.STAGES[1:]:
        assert re.search(rf"^  {re.escape(part)}\s+\d+\.\d\d s\s+\d+\.\d%$", warm, re.M), (part, warm)
    assert re.search(r"^  stages \+ decode\s+\d+\.\d\d s  target <= 2 s: (PASS|MISS)$", warm, re.M)
    assert "0 loads, 1 CPU threads" in warm  # the warm runs take the models from the cache, on --threads

    rec = json.loads(out.read_text())
    (c,), (w,) = rec["cold"], rec["warm"]
    assert all(c[p] > 0 for p in first_video.STAGES) and c["total"] > sum(c[p] for p in first_video.STAGES)
    assert c[first_video.START] > 0
    assert all(w[p] > 0 for p in first_video.STAGES[1:]) and w["model loads"] == 0 and w["threads"] == 1
    assert w["total"] == sum(w[p] for p in first_video.STAGES[1:])
