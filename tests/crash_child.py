"""`python tests/crash_child.py EVENTS PAUSE -- ARGS...`: runs `fmjax ARGS` and appends a line
to the file EVENTS whenever training enters or leaves a phase, so that a test can kill the process
(SIGKILL) inside the phase it chooses and tell afterwards where the kill landed:

    call N / call_end N       a device call that ends at step N (dispatch, then its result)
    eval N / eval_end N       the eval at step N
    commit N / commit_end N   Orbax's commit of checkpoint N (its files are written; the commit
                              renames the temporary directory, in a background thread)

PAUSE ("call:N", "eval:N", "commit:N" or "none") makes that phase linger PAUSE_SECONDS at step N, so
a kill has time to land inside it. Nothing here changes what is computed.
"""

import asyncio
import sys
import time

PAUSE_SECONDS = 2.0


def main(events_path: str, pause: str, argv: list[str]) -> None:
    import jax
    from orbax.checkpoint._src.path import atomicity

    from fmjax import train

    from fmjax.cli import main as cli

    def note(text: str) -> None:
        with open(events_path, "a") as f:   # closed at once: the line is in the OS when killed
            f.write(text + "\n")

    make_train_call, evaluate = train.make_train_call, train.evaluate
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    def noting_make_train_call(*args, **kwargs):
        call = make_train_call(*args, **kwargs)

        def noting_call(state, batches):
            end = int(state.step) + jax.tree.leaves(batches)[0].shape[0]
            note(f"call {end}")
            out = call(state, batches)
            if pause == f"call:{end}":
                time.sleep(PAUSE_SECONDS)
            out[1]["loss"].block_until_ready()
            note(f"call_end {end}")
            return out
        return noting_call

    def noting_evaluate(exp, state, eval_step, *details):
        step = int(state.step)
        note(f"eval {step}")
        if pause == f"eval:{step}":
            time.sleep(PAUSE_SECONDS)
        metrics = evaluate(exp, state, eval_step, *details)
        note(f"eval_end {step}")
        return metrics

    async def noting_finalize(self):
        name = self.get_final().name
        if not name.isdigit():   # an item inside the step directory, not the step itself
            return await finalize(self)
        note(f"commit {name}")
        if pause == f"commit:{name}":
            await asyncio.sleep(PAUSE_SECONDS)
        await finalize(self)
        note(f"commit_end {name}")

    train.make_train_call, train.evaluate = noting_make_train_call, noting_evaluate
    atomicity.AtomicRenameTemporaryPath.finalize = noting_finalize
    cli.run(["fmjax", *argv])


if __name__ == "__main__":
    separator = sys.argv.index("--")
    main(sys.argv[1], sys.argv[2], sys.argv[separator + 1:])
