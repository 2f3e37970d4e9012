"""Task registry: `config.task` -> the class that owns loss, metrics and eval for a family."""

from fmjax.tasks.base import Task
from fmjax.tasks.classification import Classification

TASKS = {"classification": Classification}


def build_task(config, info) -> Task:
    return TASKS[config.task](config, info)
