"""Writes the shipped workflows from one description each: UI format in workflows/*.json (ComfyUI lists a pack's
workflows/ folder as templates) and API format in workflows/api/*.json (for scripts and POST /prompt).

Widget order, socket lists and links come from the node schemas (loaded with the tests' stand-in host, which is
why this lives here and not in workflows/, whose JSON files ComfyUI serves as templates), so the files match the
nodes. Run after changing a node's inputs: ``.venv/bin/python tests/build_workflows.py``; the committed JSON is
what tests/test_workflows.py checks and runs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
OUT = ROOT / "workflows"

from comfy_host import comfy_host  # noqa: E402
from ditalker_core.demo import CLIP as CLIP_DIR  # noqa: E402
from ditalker_core.demo import DEFAULT_OPTIONS as DEMO_OPTIONS  # noqa: E402
from ditalker_core.demo import INPUTS, TRANSFORMER  # noqa: E402
from ditalker_core.demo import T5 as T5_DIR  # noqa: E402
from ditalker_core.demo import VAE as VAE_DIR  # noqa: E402
from ditalker_core.demo import WHISPER as WHISPER_DIR  # noqa: E402
from comfy_host.workflow import NodeSpec, is_widget, ui_to_api, widgets_values  # noqa: E402

# The shipped demo (ditalker_core/demo): files in the folders the pack registers, inputs copied to input/.
DEMO_CHECKPOINT = TRANSFORMER.name
DEMO_VAE, DEMO_WHISPER, DEMO_T5, DEMO_CLIP = VAE_DIR.name, WHISPER_DIR.name, T5_DIR.name, CLIP_DIR.name
DEMO_INPUTS = "ditalker_demo_"
DEMO_TRANSCRIPT = (INPUTS / "speech.txt").read_text().strip() if (INPUTS / "speech.txt").is_file() else ""

# The released files, named as README's model table says to store them.
CHECKPOINT = "ditalker_xl.safetensors"
VAE = "EasyAnimateV3-XL-2-InP-512x512"
WHISPER = "whisper-tiny"
T5 = "EasyAnimateV3-t5"
CLIP_VISION = "EasyAnimateV3-image-encoder"
ALIGNER = "wav2vec2-base-960h"
RECON = "epoch_20.pth"
EASYANIMATE = "https://huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512"
DEEP3D = "https://github.com/sicxu/Deep3DFaceRecon_pytorch#inference-with-a-pre-trained-model"

MODELS_NOTE = f"""## DiTalker models
Put these under `ComfyUI/models/` (see the README), then pick them in the nodes:
- `ditalker/{CHECKPOINT}`: the DiTalker transformer
- `vae/{VAE}/`: the `vae/` folder of [EasyAnimateV3-XL-2-InP-512x512]({EASYANIMATE}), renamed
- `text_encoders/{T5}/`: its `text_encoder/` and `tokenizer/` folders
- `clip_vision/{CLIP_VISION}/`: its `image_encoder/` folder
- `audio_encoders/{WHISPER}/`: [openai/whisper-tiny](https://huggingface.co/openai/whisper-tiny)
- `ditalker/wav2vec2/{ALIGNER}/`: [facebook/wav2vec2-base-960h](https://huggingface.co/facebook/{ALIGNER})
  (word timings; `none` spreads the words evenly)
"""
STYLE_NOTE = f"""- `ditalker/3dmm/{RECON}`: [Deep3DFaceRecon_pytorch]({DEEP3D}) (its released checkpoint)
- `ditalker/dwpose/`: `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` from [yzd-v/DWPose](https://huggingface.co/yzd-v/DWPose)
"""
USAGE_NOTE = """
## Use
Load your portrait and speech, and write **what is said** in DiTalker Phonemes' transcript.
"""


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    values: dict[str, Any]
    links: dict[str, tuple["Node", str]]
    title: str | None = None


@dataclass
class Graph:
    """Nodes by type with widget values and links by name; unset widgets keep the schema default."""

    specs: dict[str, NodeSpec]
    nodes: list[Node] = field(default_factory=list)
    notes: list[tuple[tuple[int, int], str, str]] = field(default_factory=list)

    def add(self, node_type: str, pos: tuple[int, int], title: str | None = None, **inputs: Any) -> Node:
        spec = self.specs[node_type]
        values = {w.id: w.default for w in spec.widgets}
        links = {}
        for name, value in inputs.items():
            spec.input(name)  # an unknown input name fails here
            if isinstance(value, tuple):
                links[name] = value
            else:
                values[name] = value
        node = Node(len(self.nodes) + 1, node_type, pos, values, links, title)
        self.nodes.append(node)
        return node

    def note(self, pos: tuple[int, int], title: str, text: str) -> None:
        self.notes.append((pos, title, text))

    def _order(self) -> list[Node]:
        done: list[Node] = []
        while len(done) < len(self.nodes):
            done += [n for n in self.nodes if n not in done and all(s in done for s, _ in n.links.values())]
        return done

    def ui(self, name: str) -> dict:
        order = {node.id: index for index, node in enumerate(self._order())}
        outputs: dict[tuple[int, int], list[int]] = {}
        links, nodes = [], []
        for node in self.nodes:
            spec = self.specs[node.type]
            sockets = [i for i in spec.inputs if not is_widget(i)] + [i for i in spec.widgets if i.id in node.links]
            inputs = []
            for slot, socket in enumerate(sockets):
                entry: dict[str, Any] = {"name": socket.id, "type": socket.io_type, "link": None}
                if socket.optional:
                    entry["shape"] = 7
                if is_widget(socket):
                    entry["widget"] = {"name": socket.id}
                if socket.id in node.links:
                    source, output = node.links[socket.id]
                    source_slot = [n for n, _ in self.specs[source.type].outputs].index(output)
                    link_type = self.specs[source.type].outputs[source_slot][1]
                    links.append([len(links) + 1, source.id, source_slot, node.id, slot, link_type])
                    outputs.setdefault((source.id, source_slot), []).append(len(links))
                    entry["link"] = len(links)
                inputs.append(entry)
            nodes.append({"id": node.id, "type": node.type, "pos": list(node.pos), "size": _size(spec, sockets),
                          "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": [],
                          **({"title": node.title} if node.title else {}),
                          "properties": {"Node name for S&R": node.type},
                          "widgets_values": widgets_values(spec, node.values)})
        for entry, node in zip(nodes, self.nodes):
            entry["outputs"] = [{"name": out_name, "type": out_type, "links": outputs.get((node.id, slot)),
                                 "slot_index": slot}
                                for slot, (out_name, out_type) in enumerate(self.specs[node.type].outputs)]
        for index, (pos, title, text) in enumerate(self.notes):
            nodes.append({"id": len(self.nodes) + index + 1, "type": "MarkdownNote", "pos": list(pos),
                          "size": [420, 420], "flags": {}, "order": len(nodes), "mode": 0, "inputs": [],
                          "outputs": [], "title": title, "properties": {}, "widgets_values": [text],
                          "color": "#432", "bgcolor": "#653"})
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ComfyUI-DiTalker/{name}")), "revision": 0,
                "last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [520, 80]}}, "version": 0.4}


def _size(spec: NodeSpec, sockets: list[Any]) -> list[int]:
    """Room for the sockets and widgets (multiline text boxes and image previews are taller)."""
    widgets = [w for w in spec.widgets if w not in sockets]
    tall = sum(90 for w in widgets if getattr(w, "multiline", False))
    tall += 240 if spec.node_id == "LoadImage" else 0
    return [340, 40 + 22 * max(len(sockets), len(spec.outputs)) + 26 * len(widgets) + tall]


def _base(graph: Graph, transcript: str, emotion: str = "neutral") -> dict[str, Node]:
    """The audio-driven portrait graph shared by every workflow (column by column, left to right)."""
    n = {}
    n["image"] = graph.add("LoadImage", (0, 0), image="portrait.png")
    n["audio"] = graph.add("LoadAudio", (0, 420), audio="speech.wav")
    n["model"] = graph.add("DiTalkerModelLoader", (380, 0), checkpoint=CHECKPOINT, config="xl")
    n["vae"] = graph.add("DiTalkerVAELoader", (380, 180), vae=VAE)
    n["reference"] = graph.add("DiTalkerReference", (380, 330), image=(n["image"], "IMAGE"),
                               mask=(n["image"], "MASK"), clip_vision=CLIP_VISION, resolution=512)
    n["features"] = graph.add("DiTalkerAudioEncode", (380, 500), audio=(n["audio"], "AUDIO"), whisper=WHISPER,
                              fps=25.0)
    n["phonemes"] = graph.add("DiTalkerPhonemes", (760, 0), audio_features=(n["features"], "audio_features"),
                              transcript=transcript, language="en", aligner=ALIGNER)
    n["emotion"] = graph.add("DiTalkerEmotion", (760, 300), emotion=emotion, t5=T5)
    return n


def _sampler(graph: Graph, n: dict[str, Node], pos: tuple[int, int], **settings: Any) -> Node:
    return graph.add("DiTalkerSampler", pos, model=(n["model"], "model"), vae=(n["vae"], "vae"),
                     reference=(n["reference"], "reference"), audio_features=(n["features"], "audio_features"),
                     phonemes=(n["phonemes"], "phonemes"), emotion=(n["emotion"], "emotion"), **settings)


def _output(graph: Graph, n: dict[str, Node], sampler: Node, x: int, prefix: str) -> None:
    decode = graph.add("DiTalkerDecode", (x, 0), vae=(n["vae"], "vae"), latents=(sampler, "latents"))
    video = graph.add("CreateVideo", (x, 140), images=(decode, "frames"), audio=(decode, "audio"),
                      fps=(decode, "fps"))
    graph.add("SaveVideo", (x, 290), video=(video, "VIDEO"), filename_prefix=prefix)


def talking_portrait(graph: Graph) -> None:
    n = _base(graph, "Hello, nice to meet you.")
    _output(graph, n, _sampler(graph, n, (1140, 0)), 1520, "ditalker/talking_portrait")
    graph.note((-460, 0), "Read me", MODELS_NOTE + USAGE_NOTE)


def style_from_video(graph: Graph) -> None:
    n = _base(graph, "Good morning, everyone. Let me tell you about my day.")
    clip = graph.add("LoadVideo", (0, 640), title="Load Style Video", file="style_video.mp4")
    parts = graph.add("GetVideoComponents", (380, 700), video=(clip, "VIDEO"))
    style = graph.add("DiTalkerStyleEncode", (760, 620), recon_model=RECON, style_length=256,
                      style_frames=(parts, "images"))
    pose = graph.add("DiTalkerPose", (760, 800), reference=(n["reference"], "reference"),
                     audio_features=(n["features"], "audio_features"), style_frames=(parts, "images"))
    sampler = _sampler(graph, n, (1140, 0), style=(style, "style"), pose=(pose, "pose"))
    _output(graph, n, sampler, 1520, "ditalker/style_from_video")
    graph.note((-460, 0), "Read me", MODELS_NOTE + STYLE_NOTE + USAGE_NOTE
               + "The style video (a few seconds of a face talking) sets the speaking style and head motion.\n")


def emotion_control(graph: Graph) -> None:
    n = _base(graph, "I just heard the best news, and I can't wait to share it with you!", emotion="happy")
    sampler = _sampler(graph, n, (1140, 0), audio_guidance=5.0, style_guidance=4.0, emotion_guidance=9.0)
    _output(graph, n, sampler, 1520, "ditalker/emotion_control")
    graph.note((-460, 0), "Read me", MODELS_NOTE + USAGE_NOTE
               + "Pick the expression in DiTalker Emotion. The sampler weighs audio (lip sync), style and emotion "
                 "separately: raise emotion_guidance for a stronger expression, audio_guidance for tighter lips.\n")


LONG_TRANSCRIPT = (
    "Thank you all for coming today. I want to talk about how we listen to each other. When someone speaks, we "
    "often wait for our turn instead of hearing what they say. Try something different this week. Ask one more "
    "question before you answer. Notice the pauses, the small changes in a voice, and the words that are chosen "
    "with care. Good conversations are not about winning. They are about understanding, and understanding takes "
    "time. So slow down, be curious, and give people the space to finish their thoughts. Listening well is a "
    "skill, and like every skill, it grows a little every time you practice it. Thank you."
)


def long_audio(graph: Graph) -> None:
    n = _base(graph, LONG_TRANSCRIPT)
    sampler = _sampler(graph, n, (1140, 0), overlap=8)
    estimate = graph.add("DiTalkerEstimate", (1140, 520), model=(n["model"], "model"), vae=(n["vae"], "vae"),
                         reference=(n["reference"], "reference"), audio_features=(n["features"], "audio_features"))
    graph.add("PreviewAny", (1520, 520), title="Time and memory needed", source=(estimate, "estimate"))
    _output(graph, n, sampler, 1520, "ditalker/long_audio")
    graph.note((-460, 0), "Read me", MODELS_NOTE + USAGE_NOTE
               + "Any length works: audio longer than the model's clip is generated in windows that overlap by "
                 "`overlap` frames and continue each other. DiTalker Run Estimate measures one step and one "
                 "decode first and shows the time and memory the whole run needs (give it the sampler's "
                 "settings).\n")


DEMO_NOTE = """## DiTalker demo (runs as installed)
The demo model that ships with the pack: a small DiTalker trained on synthetic talking faces (64 px), with its
VAE, Whisper tiny.en and seeded stand-ins of T5 and CLIP. Its folders are registered with ComfyUI and its inputs
copied to `input/ditalker_demo_*` when the pack loads, so nothing needs downloading.

It animates the bundled portrait with the bundled speech; the style clip's 3DMM coefficients set the speaking
manner and its DWPose drawing the head motion (a nod); DiTalker Emotion sets the expression. Swap the speech for
your own in Load Audio (and its words in DiTalker Phonemes). The model knows only synthetic faces: real photos
need the real DiTalker weights (the other templates).
"""


def demo(graph: Graph) -> None:
    n = {}
    n["image"] = graph.add("LoadImage", (0, 0), image=f"{DEMO_INPUTS}portrait.png")
    n["audio"] = graph.add("LoadAudio", (0, 420), audio=f"{DEMO_INPUTS}speech.wav")
    pose_video = graph.add("LoadVideo", (0, 640), title="Load Style Pose (DWPose)", file=f"{DEMO_INPUTS}style_pose.mp4")
    parts = graph.add("GetVideoComponents", (0, 900), video=(pose_video, "VIDEO"))
    n["model"] = graph.add("DiTalkerModelLoader", (380, 0), checkpoint=DEMO_CHECKPOINT, config="demo", dtype="fp32")
    n["vae"] = graph.add("DiTalkerVAELoader", (380, 180), vae=DEMO_VAE, dtype="fp32", tiling=False)
    n["reference"] = graph.add("DiTalkerReference", (380, 330), image=(n["image"], "IMAGE"),
                               mask=(n["image"], "MASK"), clip_vision=DEMO_CLIP, resolution=64)
    n["features"] = graph.add("DiTalkerAudioEncode", (380, 500), audio=(n["audio"], "AUDIO"), whisper=DEMO_WHISPER,
                              fps=25.0)
    n["phonemes"] = graph.add("DiTalkerPhonemes", (760, 0), audio_features=(n["features"], "audio_features"),
                              transcript=DEMO_TRANSCRIPT, language="en")
    n["emotion"] = graph.add("DiTalkerEmotion", (760, 300), emotion="happy", t5=DEMO_T5)
    style = graph.add("DiTalkerStyleEncode", (760, 620), style_length=64,
                      coefficients_file=f"{DEMO_INPUTS}style_coefficients.npy")
    pose = graph.add("DiTalkerPose", (760, 820), reference=(n["reference"], "reference"),
                     audio_features=(n["features"], "audio_features"), pose_images=(parts, "images"))
    guidance = DEMO_OPTIONS.guidance
    sampler = _sampler(graph, n, (1140, 0), style=(style, "style"), pose=(pose, "pose"), steps=DEMO_OPTIONS.steps,
                       audio_guidance=guidance.audio, style_guidance=guidance.style,
                       emotion_guidance=guidance.emotion, denoise=DEMO_OPTIONS.denoise, seed=0)
    _output(graph, n, sampler, 1520, "ditalker/demo")
    graph.note((-460, 0), "Read me", DEMO_NOTE)


WORKFLOWS = {"ditalker_demo": demo, "ditalker_talking_portrait": talking_portrait, "ditalker_style_from_video": style_from_video,
             "ditalker_emotion_control": emotion_control, "ditalker_long_audio": long_audio}


def main() -> None:
    out = OUT
    (out / "api").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as base, comfy_host(Path(base), {}) as host:
        specs = {node_id: NodeSpec.of(cls) for node_id, cls in host.node_classes.items()}
        for name, describe in WORKFLOWS.items():
            graph = Graph(specs)
            describe(graph)
            ui = graph.ui(name)
            (out / f"{name}.json").write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
            (out / "api" / f"{name}.json").write_text(
                json.dumps(ui_to_api(ui, specs), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
