"""Text environments for espl-bench: math with answer verification and multi-hop search QA.

Importing the package registers every env, the built-in ones and those of plugins (entry-point
group ``espl_bench.envs``), so that ``import envs; gymnasium.make("espl/GSM8K-v0")`` works as
Gymnasium users expect. Registration only records entry points: datasets, models and heavy
libraries load when an env is built.
"""

from envs.base import ChatSpace, Message, PrintableText, Task, TextEnv
from envs.registry import list_envs, load_all, make, register, resolve

__all__ = ["ChatSpace", "Message", "PrintableText", "Task", "TextEnv", "list_envs", "make", "register", "resolve"]

load_all()
