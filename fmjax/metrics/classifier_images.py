"""A classifier's confusion matrix and ROC curves as small TensorBoard images at each eval,
drawn with numpy and Pillow (milliseconds; matplotlib would add its import to every run).
`fmjax plot --kind confusion|roc` draws the labelled versions from the same details."""

import numpy as np

SIZE = 256   # pixels of the ROC square and, at most, of the confusion matrix
# Tableau's ten colours (matplotlib's default cycle), so both kinds of picture agree.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def row_normalised(counts_LL) -> np.ndarray:
    """Each true class's counts as fractions of that class (an empty row stays 0)."""
    counts_LL = np.asarray(counts_LL, np.float64)
    totals_L1 = counts_LL.sum(axis=1, keepdims=True)
    return np.divide(counts_LL, totals_L1, out=np.zeros_like(counts_LL), where=totals_L1 > 0)


def confusion_image(counts_LL) -> np.ndarray:
    """uint8 [Y, X, 3]: one cell per (true row, predicted column), darker blue = a larger share
    of the row, with the count written in where cells are large enough."""
    from PIL import Image, ImageDraw

    fractions_LL = row_normalised(counts_LL)
    num_classes = len(fractions_LL)
    cell = max(1, SIZE // num_classes)
    white, blue = np.array([247, 251, 255]), np.array([8, 48, 107])
    rgb_LL3 = (white + fractions_LL[..., None] * (blue - white)).astype(np.uint8)
    image = Image.fromarray(np.repeat(np.repeat(rgb_LL3, cell, 0), cell, 1))
    if cell >= 16:
        draw = ImageDraw.Draw(image)
        for (row, col), count in np.ndenumerate(np.asarray(counts_LL)):
            ink = (255, 255, 255) if fractions_LL[row, col] > 0.5 else (0, 0, 0)
            draw.text(((col + 0.5) * cell, (row + 0.5) * cell), str(count), fill=ink, anchor="mm")
    return np.asarray(image)


def roc_image(roc_curves: list[dict | None]) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3]: each class's ROC curve (false positive rate right, true positive
    rate up) over the chance diagonal."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)
    last = SIZE - 1
    draw.rectangle((0, 0, last, last), outline=(0, 0, 0))
    draw.line((0, last, last, 0), fill=(190, 190, 190))
    for c, curve in enumerate(roc_curves):
        if curve is not None:
            points = [(x * last, (1 - y) * last) for x, y in zip(curve["fpr"], curve["tpr"])]
            draw.line(points, fill=PALETTE[c % len(PALETTE)], width=2)
    return np.asarray(image)


def images(details: dict) -> dict[str, np.ndarray]:
    """{"eval/confusion_matrix", "eval/roc"} for a classifier's eval details; {} for others."""
    if "confusion" not in details:
        return {}
    return {"eval/confusion_matrix": confusion_image(details["confusion"]),
            "eval/roc": roc_image(details["roc"])}
