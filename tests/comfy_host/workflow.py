"""ComfyUI's two workflow formats, and how the server runs the API one, for the shipped-workflow tests and
``tests/build_workflows.py``.

UI format (what the frontend saves and opens as a template, version 0.4): nodes carry their widget values as a
positional ``widgets_values`` list and their sockets as ``inputs``/``outputs``; ``links`` are
``[id, from node, from slot, to node, to slot, type]``. API format (what the frontend POSTs to /prompt):
``{"<id>": {"class_type", "inputs": {name: value | ["<from id>", slot]}}}``. The widget layout below is the
frontend's (v1.27): widget inputs in schema order, required ones first; a ``seed`` or a
``control_after_generate`` widget is followed by its control value; an upload combo is followed by the upload
widget(s). Socket inputs are listed first, then widgets that were given a link.

It mirrors ComfyUI (v0.3.64, frontend 1.27) for offline tests; the real server is covered by
tests/test_comfyui_integration.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
# Widgets the frontend adds after an upload combo, and what it saves for them.
UPLOAD_WIDGET_VALUES = {"image_upload": ["image"], "video_upload": ["image"], "audio_upload": [None, None]}


@dataclass(frozen=True)
class NodeSpec:
    """A node type as the frontend sees it: inputs in its order (required first), outputs (name, type)."""

    node_id: str
    display_name: str
    inputs: tuple[Any, ...]
    outputs: tuple[tuple[str, str], ...]
    is_output_node: bool

    @classmethod
    def of(cls, node_class: Any) -> "NodeSpec":
        schema = node_class.GET_SCHEMA()
        inputs = [i for i in schema.inputs or [] if not i.optional] + [i for i in schema.inputs or [] if i.optional]
        outputs = tuple((o.display_name or o.io_type, o.io_type) for o in schema.outputs or [])
        return cls(schema.node_id, schema.display_name or schema.node_id, tuple(inputs), outputs,
                   schema.is_output_node)

    def input(self, name: str) -> Any:
        return next(i for i in self.inputs if i.id == name)

    @property
    def widgets(self) -> list[Any]:
        return [i for i in self.inputs if is_widget(i)]

    @property
    def sockets(self) -> list[Any]:
        return [i for i in self.inputs if not is_widget(i)]


def is_widget(spec_input: Any) -> bool:
    return spec_input.io_type in WIDGET_TYPES and not getattr(spec_input, "force_input", False)


def extra_widget_count(widget: Any) -> int:
    """Entries the frontend stores after a widget's own value."""
    controls = 1 if getattr(widget, "control_after_generate", False) or widget.id in ("seed", "noise_seed") else 0
    upload = getattr(widget, "upload", None)
    return controls + (len(UPLOAD_WIDGET_VALUES[upload.value]) if upload is not None else 0)


def widgets_values(spec: NodeSpec, values: dict[str, Any], control: str = "fixed") -> list[Any]:
    """The UI ``widgets_values`` list for widget values given by name."""
    out = []
    for widget in spec.widgets:
        out.append(values[widget.id])
        if getattr(widget, "control_after_generate", False) or widget.id in ("seed", "noise_seed"):
            out.append(control)
        if getattr(widget, "upload", None) is not None:
            out += UPLOAD_WIDGET_VALUES[widget.upload.value]
    return out


def split_widgets_values(spec: NodeSpec, stored: list[Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``widgets_values`` -> (value by widget name, the extra entries after each widget)."""
    values, extras, index = {}, {}, 0
    for widget in spec.widgets:
        if index >= len(stored):
            raise ValueError(f"{spec.node_id}: widgets_values has {len(stored)} entries, widget {widget.id!r} has none")
        values[widget.id] = stored[index]
        count = extra_widget_count(widget)
        extras[widget.id] = stored[index + 1:index + 1 + count]
        index += 1 + count
    if index != len(stored):
        raise ValueError(f"{spec.node_id}: widgets_values has {len(stored)} entries, the widgets take {index}")
    return values, extras


def ui_to_api(ui: dict, specs: dict[str, NodeSpec]) -> dict[str, dict]:
    """The prompt the frontend queues for a UI workflow (its graphToPrompt): frontend-only nodes dropped,
    widget values by name, linked inputs as [source id, output slot]."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed; shipped workflows run all")
        spec = specs[node["type"]]
        values, _ = split_widgets_values(spec, node.get("widgets_values", []))
        inputs: dict[str, Any] = dict(values)
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, source, slot, _, _, _ = links[socket["link"]]
                inputs[socket["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title", spec.display_name)}}
    return prompt


def execute_prompt(prompt: dict[str, dict], classes: dict[str, Any]) -> dict[str, Any]:
    """Run an API prompt as the server does: only what its output nodes need, every node after its inputs, a
    linked input taking the source's output value. Returns each node's NodeOutput by node id."""
    from comfy_execution.utils import CurrentNodeContext

    done: dict[str, Any] = {}

    def run(node_id: str) -> Any:
        if node_id not in done:
            node = prompt[node_id]
            kwargs = {name: run(value[0]).result[value[1]] if isinstance(value, list) else value
                      for name, value in node["inputs"].items()}
            with CurrentNodeContext("prompt", node_id):
                done[node_id] = classes[node["class_type"]].EXECUTE_NORMALIZED(**kwargs)
        return done[node_id]

    for node_id, node in prompt.items():
        if classes[node["class_type"]].GET_SCHEMA().is_output_node:
            run(node_id)
    return done


def validate_prompt(prompt: dict[str, dict], classes: dict[str, Any]) -> dict[str, list[dict]]:
    """The errors ComfyUI's /prompt returns, by node id ({}: accepted), as its ``execution.validate_inputs``
    (v0.3.64) finds them: a widget value that does not convert to INT/FLOAT fails; one outside min/max fails
    unless the node's ``validate_inputs`` names that widget (V3 combo values are not checked at all); then
    ``validate_inputs`` is called with the widgets it names (linked ones as None) and, when it does not return
    True, gives one ``custom_validation_failed`` error per named widget with its answer. Every node is checked,
    so all errors come back at once."""
    import inspect

    from comfy_api.latest import io

    errors: dict[str, list[dict]] = {}
    for node_id, node in prompt.items():
        cls = classes[node["class_type"]]
        validator = cls.validate_inputs
        custom = validator.__func__ is not io.ComfyNode.validate_inputs.__func__
        named = [a for a in inspect.getfullargspec(validator).args if a != "cls"] if custom else []
        found, values = [], {}
        for spec in cls.GET_SCHEMA().inputs or []:
            value = node["inputs"].get(spec.id)
            if value is None or isinstance(value, list):
                continue
            try:
                value = {"INT": int, "FLOAT": float}.get(spec.io_type, lambda v: v)(value)
            except (TypeError, ValueError) as error:
                found.append({"type": "invalid_input_type", "details": f"{spec.id}, {value}, {error}"})
                continue
            values[spec.id] = value
            low, high = getattr(spec, "min", None), getattr(spec, "max", None)
            if spec.id not in named and ((low is not None and value < low) or (high is not None and value > high)):
                found.append({"type": "value_out_of_range", "details": spec.id})
        if named:
            answer = validator(**{name: values.get(name) for name in named})
            if answer is not True:
                found += [{"type": "custom_validation_failed", "details": f"{name} - {answer}"} for name in named]
        if found:
            errors[node_id] = found
    return errors
