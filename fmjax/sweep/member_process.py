"""The process that trains one group of vectorised sweep members (fmjax/sweep/member_group.py):

    python -m fmjax.sweep.member_process GROUP.json

GROUP.json holds the members' common config, each member's values and its trial workdir.
Exit status 2 with one line for a member config that cannot be vectorised.
"""

import json
import pathlib
import sys

from fmjax import configs
from fmjax.errors import UserError
from fmjax.sweep import vectorized


def main(argv: list[str]) -> int:
    group = json.loads(pathlib.Path(argv[1]).read_text())
    try:
        vectorized.train_members(configs.from_json_dict(group["config"]), group["members"],
                                 [pathlib.Path(d) for d in group["dirs"]])
    except UserError as e:
        print(f"fmjax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
