"""Spot strategies, pure: OHLCV arrays in, signal events and indicator series out.

``indicators`` holds the vectorised maths, ``trend`` / ``oscillators`` / ``pairs`` the eleven
strategies, ``events`` their shared output type and edge detectors, and ``registry`` the
contract (parameters, warm-up, latest signal) the signal engine and the backtester call.
"""
