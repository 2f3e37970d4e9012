"""A VAE's latent space: where the encoder puts the eval examples, and what the decoder draws
across it (Kingma & Welling 2014, fig. 4).

Left: the posterior means of up to MAX_POINTS eval examples, coloured by class; with 2 latents
the latents themselves, else their first two principal components (numpy SVD). Right: decoder
pixel means on a GRID x GRID grid at Gaussian quantiles (0.05 ... 0.95): of the prior N(0, I) with
2 latents, else along the two principal directions around the mean, scaled by their spread.
"""

import pathlib

import numpy as np

from fmjax import runs
from fmjax.errors import UserError
from fmjax.plots import PlotOptions, one_run, workdirs

MAX_POINTS = 2000
GRID = 15


def figure(paths: list[pathlib.Path], options: PlotOptions = PlotOptions()):
    """The latent-space picture of the one VAE run in `paths`."""
    workdir, config = one_run.check(paths, "latent", lambda c: c.task == "vae",
                                    "a VAE (task 'vae')")
    if config.model.latent_dim < 2:   # the picture is a plane: two latents, or two components
        raise UserError(f"{workdir}: a latent plot draws a plane and needs at least 2 latents; "
                        f"this VAE has {config.model.latent_dim} (config.model.latent_dim)")
    run = runs.load(workdir, options.step, with_data=True, one_device=True)
    n = (run.exp.pipeline.info.num_eval if options.split == "eval"
         else run.exp.pipeline.info.num_val)
    batch = one_run.examples(run, options.split, np.arange(min(max(n, 1), MAX_POINTS)))
    model, params = run.task.model, {"params": run.params}
    mean_NZ = np.asarray(model.apply(params, batch["inputs"], method="encode")[0], np.float64)
    coords_N2, z_of, axis_names = _plane(mean_NZ)
    quantiles_G = _normal_quantiles(np.linspace(0.05, 0.95, GRID))
    z_GGZ = z_of(quantiles_G[::-1, None], quantiles_G[None, :])   # rows: second axis, top = high
    import jax
    images = jax.nn.sigmoid(model.apply(params, z_GGZ.reshape(GRID * GRID, -1).astype(np.float32),
                                        method="decode"))
    return _draw(run, options.split, coords_N2, batch.get("labels"), axis_names,
                 np.asarray(images))


def _normal_quantiles(p):
    from jax.scipy.special import ndtri
    return np.asarray(ndtri(np.asarray(p, np.float32)), np.float64)


def _plane(mean_NZ):
    """(2-D coordinates of the means, z(a, b) for quantiles a, b on the plane's two axes, the
    axes' names)."""
    if mean_NZ.shape[1] == 2:
        return mean_NZ, lambda a, b: np.stack(np.broadcast_arrays(b, a), -1), ("z1", "z2")
    center_Z = mean_NZ.mean(0)
    _, singular, vt_KZ = np.linalg.svd(mean_NZ - center_Z, full_matrices=False)
    spread_K = singular / np.sqrt(max(len(mean_NZ) - 1, 1))
    explained = singular ** 2 / max(float((singular ** 2).sum()), 1e-12)
    names = tuple(f"PC{i + 1} of the latent means ({explained[i]:.0%} of variance)"
                  for i in range(2))

    def z_of(a, b):
        a, b = np.broadcast_arrays(a, b)
        return (center_Z + (b[..., None] * spread_K[0]) * vt_KZ[0]
                + (a[..., None] * spread_K[1]) * vt_KZ[1])

    return (mean_NZ - center_Z) @ vt_KZ[:2].T, z_of, names


def _draw(run: runs.Run, split: str, coords_N2, labels_N, axis_names, images_BYXC):
    from matplotlib.figure import Figure
    from fmjax.metrics.image_grid import make_grid
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    scatter_ax, grid_ax = fig.subplots(1, 2)
    points = scatter_ax.scatter(coords_N2[:, 0], coords_N2[:, 1], s=6, cmap="tab10",
                                c=labels_N if labels_N is not None else None)
    if labels_N is not None:
        scatter_ax.legend(*points.legend_elements(), title="class", fontsize=7, loc="best",
                          markerscale=0.8)
    scatter_ax.set_xlabel(axis_names[0])
    scatter_ax.set_ylabel(axis_names[1])
    scatter_ax.set_title(f"posterior means of {len(coords_N2)} {split} "
                         "examples", fontsize=9)
    grid = make_grid(images_BYXC, columns=GRID, pad_value=0.5)
    grid_ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray",
                   interpolation="nearest")
    grid_ax.axis("off")
    grid_ax.set_title(f"decoded at Gaussian quantiles 0.05-0.95 along {axis_names[0][:3]} "
                      f"(right) and {axis_names[1][:3]} (up)", fontsize=9)
    fig.suptitle(f"{workdirs.name(run.workdir)}: VAE latent space "
                 f"({run.task.model.latent_dim} latents) at step {run.step}", fontsize=10)
    return fig
