"""`d2ip-live`: D2IP's network and objective at the belt's frame rate (issue 17 §2).

Every frame is one forward pass of a per-patient 3D-FastResUNet whose input is the frame's
Tikhonov preview (as Educated DIP feeds the network the classical reconstruction); a
background fine-tuning loop keeps the network adapted to the patient with D2IP's objective
(data term through the operator, 4D-TV) on the recent frames and the breaths' tidal
differences. See docs/d2ip-live.md.

- `frames.py`: simulated (preview, truth) frames on the session's model, for the start;
- `start.py`: the network's starting weights (`initial_state`, the one seam to the educated
  weights) and their cache;
- `reconstructor.py`: the streaming reconstructor, its fine-tuning step and its state.
"""
