"""Text environments for espl-bench: math with answer verification and multi-hop search QA."""

from envs.base import ChatSpace, Message, PrintableText, Task, TextEnv
from envs.registry import list_envs, make, register, resolve

__all__ = ["ChatSpace", "Message", "PrintableText", "Task", "TextEnv", "list_envs", "make", "register", "resolve"]
