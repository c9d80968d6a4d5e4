"""Reconstruction methods behind one interface (Tikhonov, TV, R-SIP, DIP, D2IP)."""
