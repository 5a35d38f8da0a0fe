"""The seven one-line bugs the test issue named, each seeded into a scratch copy of HEAD and run against the test
that must catch it. Prints one line per bug and exits non-zero when a bug goes uncaught.

    .venv/bin/python scripts/seeded_bugs.py

The copy is a temporary ``git worktree`` of the current commit (uncommitted edits are not in it); it is removed
afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (bug, file, the line as written, the line with the bug, the test that must fail)
BUGS = [
    ("guidance: style and emotion weights swapped", "ditalker_core/pipeline/guidance.py",
     "self.style * (e_as - e_a) + self.emotion * (e_ase - e_as)",
     "self.emotion * (e_as - e_a) + self.style * (e_ase - e_as)",
     "tests/test_pipeline.py::test_guidance_combination_equals_the_hand_computed_value"),
    ("sampler node: style and emotion inputs to the wrong weights", "nodes/sampling.py",
     "Guidance(audio_guidance, style_guidance, emotion_guidance)",
     "Guidance(audio_guidance, emotion_guidance, style_guidance)",
     "tests/test_nodes.py::test_sampler_inputs_reach_their_own_options"),
    ("long audio: the overlap latents not pinned to the previous window", "ditalker_core/pipeline/generate.py",
     'pinned = 0 if known is None or options.seams != "pinned" else known[1].shape[2]', "pinned = 0",
     "tests/test_pipeline.py::test_later_windows_pin_the_overlap_to_the_previous_windows_latents"),
    ("phoneme windows built per sampling window", "ditalker_core/pipeline/generate.py",
     "phoneme_windows(conditions.phoneme_ids.cpu(), win=cfg.phoneme_window // 2), start, end,",
     "phoneme_windows(slice_frames(conditions.phoneme_ids.cpu(), start, end, default_table().padding), "
     "win=cfg.phoneme_window // 2), 0, end - start,",
     "tests/test_pipeline.py::test_phoneme_windows_at_a_window_border_see_the_previous_frames"),
    ("the eye-weighted loss ignores its mask", "training/losses.py",
     "return (error * latent_mask(mask, error)).mean()", "return error.mean()",
     "tests/test_training.py::test_eye_term_is_the_error_inside_the_eye_mask_by_hand"),
    ("the stereo downmix takes the left channel", "ditalker_core/media.py",
     "mono = channels.mean(axis=0).astype(np.float32, copy=False)", "mono = channels[0].astype(np.float32, copy=False)",
     "tests/test_media.py::test_stereo_downmix_is_the_mean_of_different_channels"),
    ("state_dict / module / model checkpoint wrappers not unwrapped", "ditalker_core/checkpoints.py",
     'for wrapper in ("state_dict", "module", "model"):', "for wrapper in ():",
     "tests/test_model.py::test_wrapped_torch_checkpoints_are_unwrapped"),
]


def main() -> int:
    missed = 0
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "head"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(copy), "HEAD"], cwd=ROOT, check=True)
        try:
            for bug, path, line, buggy, test in BUGS:
                file = copy / path
                text = file.read_text()
                if text.count(line) != 1:
                    raise SystemExit(f"{path} no longer holds `{line}` once; update BUGS")
                file.write_text(text.replace(line, buggy))
                try:
                    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                                         cwd=copy, capture_output=True, text=True)
                finally:
                    file.write_text(text)
                caught = run.returncode == 1
                missed += not caught
                print(f"{'caught' if caught else 'MISSED'}: {bug} by {test}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(copy)], cwd=ROOT, check=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
