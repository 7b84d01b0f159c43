"""Math environments with answer verification by math-verify (see `verify`, `datasets`, `env`)."""

from envs.math.verify import AnswerVerifier, MathVerifier, Reason, Verdict, default_verifier

__all__ = ["AnswerVerifier", "MathVerifier", "Reason", "Verdict", "default_verifier"]
