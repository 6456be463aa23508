"""Spot strategies, pure: OHLCV arrays in, signal events and indicator series out.

``indicators`` holds the vectorised maths, ``trend`` / ``oscillators`` / ``pairs`` the eleven
strategies, ``events`` their shared output type and edge detectors, ``params`` what each
accepts (defaults, ranges, warm-up; numpy-free, for the config check), ``registry`` the
calls the signal engine and the backtester share (signals over a history, the latest signal),
and ``incremental`` the same strategies bar by bar, as the signal engine runs them.
"""
