"""Distillation: objectives (DC, DM, MTT), the LD3M loop, MTT experts, D3HR, baselines."""
