"""Flower federation: ServerApp/ClientApp, the strategy, and SuperLink/SuperNode process control."""
