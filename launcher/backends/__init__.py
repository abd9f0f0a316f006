"""Backends behind one interface; see base.py for the contract and the registry."""
