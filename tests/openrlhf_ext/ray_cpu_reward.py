"""Reward file for the CPU Ray trainer tests: a tiny random model never solves countdown, so every group
would tie and every advantage be 0. Label "tie": reward 0 for every response (a group dynamic sampling
drops); label "mix": the parity of the response's length in characters (mixed groups, real gradients)."""

import torch


def reward_func(queries, prompts, labels):
    rewards = []
    for query, prompt, label in zip(queries, prompts, labels):
        response = query[len(prompt) :] if query.startswith(prompt) else query
        rewards.append(0.0 if label == "tie" else float(len(response) % 2))
    values = torch.tensor(rewards)
    return {"rewards": values, "scores": values, "extra_logs": {}}
