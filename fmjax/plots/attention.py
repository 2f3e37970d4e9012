"""Attention maps of a trained Transformer (GPT, BERT, ViT, seq2seq) for one input: one panel
per layer and head, the weights each query gives each key.

The model runs once with `mutable=["intermediates"]`, where every `Attention` sows its weights
(fmjax/models/transformer.py). Text comes from `options.input`, tokenised with the run's
tokenizer, or is eval example `options.example`; a translation's target is the model's own
greedy translation of the source, fed to the decoder as in training. A ViT's maps are the class
token's row (mean pooling: the mean over queries) over the patch grid, drawn over the image.
"""

import dataclasses
import pathlib
import re

import numpy as np

from fmjax import runs
from fmjax.errors import UserError
from fmjax.plots import PlotOptions, one_run, workdirs
from fmjax.token_ids import PAD_ID

MODELS = ("gpt", "bert", "vit", "seq2seq")
MAX_TOKENS = 64      # longer text inputs are cut to their first MAX_TOKENS tokens
KINDS = {"attention": "self-attention", "cross_attention": "cross-attention"}


@dataclasses.dataclass
class Maps:
    """One layer's weights, probs_NTS, with the tokens of its queries and keys (None: no
    labels, e.g. image patches)."""
    title: str
    probs_NTS: np.ndarray
    queries: list[str] | None
    keys: list[str] | None


def figure(paths: list[pathlib.Path], options: PlotOptions = PlotOptions()):
    """The attention maps of the one run in `paths` (see the module docstring)."""
    workdir, config = one_run.check(paths, "attention", lambda c: c.model.name in MODELS,
                                    "a Transformer (model " + ", ".join(MODELS) + ")")
    if config.model.name == "vit" and options.input is not None:
        raise UserError("a ViT reads images, not text: choose an eval image with --example "
                        "instead of --input")
    run = runs.load(workdir, options.step, with_data=options.input is None, one_device=True)
    if config.model.name == "vit":
        image_YXC, maps = _vit_maps(run, options)
        reader = ("the class token" if run.task.model.pool == "cls"
                  else "every patch (mean)")
        return _draw(run, maps, f"{options.split} image {options.example}: what {reader} "
                     "attends to", image_YXC)
    if config.task == "translation":
        maps, text = _translation_maps(run, options)
    else:
        maps, text = _text_maps(run, options)
    return _draw(run, maps, text)


def _apply(run: runs.Run, *inputs) -> dict:
    """{path: probs_BNTS} of every attention layer, for `inputs` to the run's model."""
    from flax import traverse_util
    _, state = run.task.model.apply({"params": run.params, **run.extra}, *inputs, train=False,
                                    mutable=["intermediates"])
    flat = traverse_util.flatten_dict(state["intermediates"])
    return {path[:-1]: np.asarray(value[0]) for path, value in flat.items()}


def _layer_maps(weights: dict, labels: dict[str, tuple]) -> list[Maps]:
    """`_apply`'s weights as Maps in reading order (encoder, decoder self, cross), labelled by
    `labels[block prefix or kind]` = (query tokens, key tokens)."""
    maps = []
    for path, probs_BNTS in weights.items():
        block, kind = path[-2], path[-1]
        prefix, layer = re.fullmatch(r"(\w*?)_?block_(\d+)", block).groups()
        name = f"{prefix} {KINDS[kind]}" if prefix else KINDS[kind]
        queries, keys = labels.get(kind if kind == "cross_attention" else prefix, (None, None))
        order = (("encoder", "", "decoder").index(prefix), kind, int(layer))
        maps.append((order, Maps(f"{name}, layer {layer}", probs_BNTS[0], queries, keys)))
    return [m for _, m in sorted(maps, key=lambda pair: pair[0])]


def _token_labels(run: runs.Run, ids_T, specials: dict[int, str]) -> list[str]:
    shown = {" ": "␣", "\n": "\\n", "": "▁"}   # a SentencePiece word start decodes to ""
    labels = []
    for i in np.asarray(ids_T).tolist():
        text = specials[i] if i in specials else run.tokenizer.decode([i])
        labels.append(shown.get(text, text))
    return labels


def _example_inputs(run: runs.Run, options: PlotOptions) -> np.ndarray:
    """The inputs of example `options.example` of `options.split`."""
    return one_run.examples(run, options.split, np.array([options.example]))["inputs"][0]


def _check_text(text: str) -> str:
    if not text:
        raise UserError("the input text is empty")
    return text


def _check_tokens(ids_T: np.ndarray) -> np.ndarray:
    """`ids_T`, unless the tokenizer made nothing of the text (e.g. only spaces for a word
    tokenizer): a map of no tokens cannot be drawn."""
    if not ids_T.size:
        raise UserError("the input text holds no tokens (only spaces?)")
    return ids_T


def _encode(run: runs.Run, text: str) -> np.ndarray:
    return _check_tokens(np.asarray(run.tokenizer.encode(_check_text(text)),
                                    np.int32)[:MAX_TOKENS])


def _text_maps(run: runs.Run, options: PlotOptions) -> tuple[list[Maps], str]:
    """GPT (lm) and BERT (mlm, classification): the tokens of the text or eval example."""
    if options.input is not None:
        tokens_T = _encode(run, options.input)
    else:
        tokens_T = _example_inputs(run, options)
        tokens_T = tokens_T[tokens_T != PAD_ID][:MAX_TOKENS]
    tokens_T = tokens_T[:run.task.model.max_len]
    # BERT's [MASK] is one id past the tokenizer's: pre-training's mask, and in a classifier's
    # char-tokenised examples every character the tokenizer lacks (fmjax/data/text_classification)
    mask_id = getattr(run.task, "mask_id", run.tokenizer.vocab_size)
    specials = {mask_id: "[MASK]"} if run.config.model.name == "bert" else {}
    labels = _token_labels(run, tokens_T, specials)
    maps = _layer_maps(_apply(run, tokens_T[None]), {"": (labels, labels)})
    return maps, run.tokenizer.decode([t for t in tokens_T.tolist() if t not in specials])


def _translation_maps(run: runs.Run, options: PlotOptions) -> tuple[list[Maps], str]:
    """seq2seq: encoder self-attention over the source; decoder self- and cross-attention while
    it reads its own greedy translation."""
    task = run.task
    if options.input is not None:
        source_S = task.encode_sources([_check_text(options.input)])[0]
    else:
        source_S = _example_inputs(run, options)
    source_S = _check_tokens(source_S[source_S != PAD_ID][:MAX_TOKENS])
    target_T = _greedy_translation(run, source_S)
    decoder_in_T = np.asarray(task.shift_right(target_T[None]))[0]
    specials = {task.eos: "</s>", task.bos: "<s>"}
    source, decoder = (_token_labels(run, ids, specials) for ids in (source_S, decoder_in_T))
    weights = _apply(run, source_S[None], decoder_in_T[None])
    maps = _layer_maps(weights, {"encoder": (source, source), "decoder": (decoder, decoder),
                                 "cross_attention": (decoder, source)})
    text = run.tokenizer.decode(source_S.tolist())
    return maps, f"{text} → {task.detokenize(target_T[None])[0]}"


def _greedy_translation(run: runs.Run, source_S) -> np.ndarray:
    """The model's greedy translation of `source_S`, through its EOS: one jitted forward pass
    over a fixed-length decoder input per token (compiles in a fraction of beam search's time;
    the causal decoder never sees the unwritten positions)."""
    import jax
    task = run.task
    forward = jax.jit(lambda decoder_in_1T: task.model.apply(
        {"params": run.params}, source_S[None], decoder_in_1T, train=False))
    decoder_in_T = np.full(task.target_len, PAD_ID, np.int32)
    decoder_in_T[0] = task.bos
    target = []
    for i in range(task.target_len):
        target.append(int(np.argmax(forward(decoder_in_T[None])[0, i])))
        if target[-1] == task.eos:
            break
        if i + 1 < task.target_len:
            decoder_in_T[i + 1] = target[-1]
    return np.asarray(target, np.int32)


def _vit_maps(run: runs.Run, options: PlotOptions) -> tuple[np.ndarray, list[Maps]]:
    """ViT: per layer, what the class token (mean pooling: every patch, averaged) attends to,
    as [N, 1, patches]."""
    image_YXC = _example_inputs(run, options)
    maps = _layer_maps(_apply(run, image_YXC[None]), {})
    for m in maps:
        m.probs_NTS = (m.probs_NTS[:, :1, 1:] if run.task.model.pool == "cls"
                       else m.probs_NTS.mean(1, keepdims=True))
    return image_YXC, maps


def _draw(run: runs.Run, maps: list[Maps], what: str, image_YXC=None):
    """One row per layer, one column per head (a ViT's image first)."""
    from matplotlib.figure import Figure
    heads = maps[0].probs_NTS.shape[0]
    first = 1 if image_YXC is not None else 0
    panel = 1.6 if image_YXC is not None else 2.4
    fig = Figure(figsize=(panel * (heads + first) + 0.6, max(panel * len(maps) + 0.8, 3.2)),
                 layout="constrained")
    axes = fig.subplots(len(maps), heads + first, squeeze=False)
    for row, m in zip(axes, maps):
        for head, ax in enumerate(row[first:]):
            if image_YXC is None:
                _heatmap(ax, m.probs_NTS[head], m.queries, m.keys)
            else:
                _over_image(ax, image_YXC, m.probs_NTS[head, 0], run.task.model.patch_size)
            ax.set_title(f"head {head}", fontsize=8)
        row[first].set_ylabel(m.title, fontsize=8)
        for ax in row[:first]:
            ax.axis("off")
    if image_YXC is not None:
        axes[0, 0].imshow(_display(image_YXC), cmap="gray")
        axes[0, 0].set_title("input", fontsize=8)
    shown = what.replace("\n", " ⏎ ")
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    fig.suptitle(f"{workdirs.name(run.workdir)}: {run.config.model.name} attention at step "
                 f"{run.step}\n{shown}", fontsize=9)
    return fig


def _heatmap(ax, probs_TS, queries, keys):
    t, s = probs_TS.shape
    from matplotlib.colors import PowerNorm
    # Scaled per panel, square-root colours: over many keys the weights are small, and a linear
    # 0-1 scale shows only the largest.
    ax.imshow(probs_TS, cmap="viridis", norm=PowerNorm(0.5, 0.0, float(probs_TS.max())),
              interpolation="nearest")
    size = min(7.0, max(3.0, 140 / max(t, s)))   # points: about 2 inches of labels
    rotation = 90 if keys and max(map(len, keys)) > 1 else 0   # words stand up; chars don't
    for labels, n, set_ticks, set_labels, turn in (
            (keys, s, ax.set_xticks, ax.set_xticklabels, rotation),
            (queries, t, ax.set_yticks, ax.set_yticklabels, 0)):
        set_ticks(range(n) if labels and n <= MAX_TOKENS else [])
        if labels and n <= MAX_TOKENS:
            set_labels(labels, fontsize=size, rotation=turn)


def _display(image_YXC) -> np.ndarray:
    """An image scaled to [0, 1] for display (eval images may be standardised)."""
    image = np.asarray(image_YXC, np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    return image[..., 0] if image.shape[-1] == 1 else image


def _over_image(ax, image_YXC, probs_P, patch: int):
    """`probs_P` over the patch grid (row-major, as ViT.patches cuts it), over the image."""
    h, w = image_YXC.shape[:2]
    grid = probs_P.reshape(h // patch, w // patch)
    ax.imshow(_display(image_YXC), cmap="gray", extent=(0, w, h, 0))
    ax.imshow(grid, cmap="inferno", alpha=0.6, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
