"""The README's first steps run in order, as written, on the embedded data (each writes a folder of its own)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def first_steps() -> list[str]:
    text = README.read_text()
    block = re.search(r"<!-- first-steps -->\n```bash\n(.*?)```\n<!-- /first-steps -->", text, re.S)
    assert block, "README lost its first-steps block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readme_first_steps_run_as_written(tmp_path):
    bin_dir = Path(sys.executable).parent
    env_path = f"{bin_dir}:/usr/bin:/bin"
    for cmd in first_steps():  # through bash, as a reader types them (globs, a pipe), with this Python's vistok
        assert cmd.startswith("vistok "), cmd
        proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True,
                              env={"PATH": env_path, "HOME": str(tmp_path)}, timeout=600)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"{cmd}\n{proc.stderr[-2000:]}"
    assert len(list((tmp_path / "out" / "first-back").glob("*.png"))) == len(list((tmp_path / "out" / "first-vtkz").glob("*.vtkz")))
    assert (tmp_path / "out" / "first-samples.png").exists() and (tmp_path / "shards" / "first-video" / "manifest.json").exists()
