"""The agent policy: inference engines, chat formatting and batched multi-turn rollouts."""
