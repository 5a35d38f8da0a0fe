"""Stand-in for ``comfy_api.latest._io`` (``io``): socket types, inputs/outputs, ``Schema``, ``ComfyNode``,
``NodeOutput``.

It mirrors ComfyUI's API (v0.3.64) for offline tests; the real server is covered by
tests/test_comfyui_integration.py. Constructors take exactly the real keyword arguments and keep every one of
them, so a schema that would fail in ComfyUI fails here, and the tests can read what the frontend gets.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class Input:
    """A V3 input; ``io_type`` comes from the socket type class it belongs to (``Parent``)."""

    Parent: type = None

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class WidgetInput(Input):
    """An input the frontend shows as a widget (a socket too, once something is linked to it)."""

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input


class Output:
    Parent: type = None

    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class ComfyType:
    """A socket type: ``io_type`` is the string links are matched by; ``Input``/``Output`` build sockets."""

    io_type: str = None

    class Input(Input):
        pass

    class Output(Output):
        pass


def comfytype(io_type: str):
    """Bind ``io_type`` to a type class and give it its own Input/Output classes that point back at it."""

    def decorate(cls: type[ComfyType]) -> type[ComfyType]:
        cls.io_type = io_type
        cls.Input = type("Input", (cls.Input,), {"Parent": cls, "__qualname__": f"{cls.__name__}.Input"})
        cls.Output = type("Output", (cls.Output,), {"Parent": cls, "__qualname__": f"{cls.__name__}.Output"})
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyType]:
    """A new socket type; sockets connect when their type strings are equal."""

    @comfytype(io_type)
    class CustomComfyType(ComfyType):
        pass

    return CustomComfyType


@comfytype("BOOLEAN")
class Boolean(ComfyType):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: bool = None, label_on: str = None, label_off: str = None,
                     socketless: bool = None, force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on = label_on
            self.label_off = label_off


@comfytype("INT")
class Int(ComfyType):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate: bool = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min = min
            self.max = max
            self.step = step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode


@comfytype("FLOAT")
class Float(ComfyType):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: float = None, min: float = None, max: float = None,
                     step: float = None, round: float = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min = min
            self.max = max
            self.step = step
            self.round = round
            self.display_mode = display_mode


@comfytype("STRING")
class String(ComfyType):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, multiline=False, placeholder: str = None, default: str = None,
                     dynamic_prompts: bool = None, socketless: bool = None, force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts


@comfytype("COMBO")
class Combo(ComfyType):
    class Input(WidgetInput):
        def __init__(self, id: str, options: list[str] | list[int] | type[Enum] = None, display_name: str = None,
                     optional=False, tooltip: str = None, lazy: bool = None, default: str | int | Enum = None,
                     control_after_generate: bool = None, upload: UploadType = None,
                     image_folder: FolderType = None, remote: Any = None, socketless: bool = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload
            self.image_folder = image_folder
            self.remote = remote


@comfytype("IMAGE")
class Image(ComfyType):
    pass


@comfytype("MASK")
class Mask(ComfyType):
    pass


@comfytype("AUDIO")
class Audio(ComfyType):
    pass


@comfytype("VIDEO")
class Video(ComfyType):
    pass


@comfytype("*")
class AnyType(ComfyType):
    pass


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = None
    outputs: list[Output] = None
    hidden: list[Any] = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        """Input and output ids must be unique, within and across the two lists (as ComfyUI checks)."""
        input_ids = [i.id for i in self.inputs or []]
        output_ids = [o.id for o in self.outputs or []]
        issues = []
        for kind, ids in (("Input", input_ids), ("Output", output_ids)):
            repeated = [item for item, count in Counter(ids).items() if count > 1]
            if repeated:
                issues.append(f"{kind} ids must be unique, but {repeated} are not.")
        if set(input_ids) & set(output_ids):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(input_ids) & set(output_ids)} "
                          f"are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self) -> None:
        """Give outputs without ids ComfyUI's default ids."""
        for index, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"


class NodeOutput:
    """One value per output, in order, plus an optional ``ui`` dict for the frontend."""

    def __init__(self, *args: Any, ui: Optional[dict] = None, expand: Optional[dict] = None,
                 block_execution: Optional[str] = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> Optional[tuple]:
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class ComfyNode:
    """Base of V3 nodes: ``define_schema`` and ``execute`` are classmethods; inputs arrive as keyword arguments."""

    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        """What ComfyUI registers: the schema, finalized, then validated."""
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs) -> NodeOutput:
        """``execute``, with a tuple or None result normalised to a NodeOutput as ComfyUI does."""
        result = cls.execute(**kwargs)
        if result is None:
            return NodeOutput()
        if isinstance(result, tuple):
            return NodeOutput(*result)
        if not isinstance(result, NodeOutput):
            raise TypeError(f"Invalid return type from node: {type(result)}")
        return result
