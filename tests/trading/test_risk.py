import pytest

from common.model import MAX_DAY, MAX_TS_MS, RecordError
from common.timeframes import DAY_MS
from trading.risk import (
    RiskLimits,
    RiskState,
    entry_block_reason,
    new_risk_state,
    reset_risk,
    risk_summary,
    update_on_mark,
    update_on_trade_closed,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
LIMITS = RiskLimits(max_drawdown_pct=60.0, daily_loss_pct=10.0, max_consecutive_losses=5, circuit_breaker_ms=24 * HOUR)


def test_kill_switch_trips_at_exactly_max_drawdown_and_is_sticky():
    limits = RiskLimits(max_drawdown_pct=60.0, daily_loss_pct=100.0)  # isolate the drawdown rule
    state = new_risk_state(1000.0, T0)
    assert update_on_mark(state, limits, 1500.0, T0 + 1) == []
    assert state.peak_value == 1500.0
    # 1500 * 0.4 = 600.01 is 59.9993% down: not yet.
    update_on_mark(state, limits, 600.01, T0 + 2)
    assert not state.kill_switch
    events = update_on_mark(state, limits, 600.0, T0 + 3)
    assert state.kill_switch
    assert any(e.startswith("kill_switch: drawdown 60.0% >= 60%") for e in events)
    assert entry_block_reason(state, T0 + 3).startswith("kill switch: drawdown 60.0%")
    # Recovery does not clear it, and it does not re-announce itself.
    assert update_on_mark(state, limits, 1400.0, T0 + 4) == []
    assert state.kill_switch
    [cleared] = reset_risk(state, 1400.0, T0 + 5)
    assert cleared.startswith("kill_switch (drawdown 60.0% >= 60%")
    assert entry_block_reason(state, T0 + 5) is None
    assert state.peak_value == 1400.0


def test_drawdown_uses_the_running_peak_not_the_start():
    state = new_risk_state(1000.0, T0)
    update_on_mark(state, LIMITS, 2000.0, T0 + 1)
    update_on_mark(state, LIMITS, 900.0, T0 + 2)  # 55% below 2000: not tripped
    assert not state.kill_switch
    summary = risk_summary(state, T0 + 2)
    assert summary["drawdown_pct"] == pytest.approx(55.0)
    assert summary["peak_value"] == 2000.0


def test_daily_loss_trips_and_clears_at_utc_midnight_of_market_time():
    state = new_risk_state(1000.0, T0 + 1 * HOUR)
    update_on_mark(state, LIMITS, 900.0, T0 + 2 * HOUR)  # exactly -10%: not below the floor
    assert not state.daily_loss_tripped
    events = update_on_mark(state, LIMITS, 899.99, T0 + 23 * HOUR)
    assert state.daily_loss_tripped
    assert events == ["daily_loss: value 899.99 < 900.00 (10% below the day start 1000.00)"]
    assert entry_block_reason(state, T0 + 23 * HOUR + 59 * 60_000).startswith("daily loss limit hit on 2026-01-01")
    # Past midnight the block lapses even before the next mark arrives...
    assert entry_block_reason(state, T0 + DAY_MS) is None
    assert risk_summary(state, T0 + DAY_MS)["daily_loss_tripped"] is False
    # ...and the first mark of the new day starts a new window at its own value.
    events = update_on_mark(state, LIMITS, 850.0, T0 + DAY_MS)
    assert events == ["daily_loss: cleared for the new day 2026-01-02"]
    assert (state.day, state.day_start_value, state.daily_loss_tripped) == (T0 // DAY_MS + 1, 850.0, False)
    update_on_mark(state, LIMITS, 766.0, T0 + DAY_MS + HOUR)  # 850 * 0.9 = 765
    assert not state.daily_loss_tripped


def test_daily_window_ignores_marks_out_of_order():
    state = new_risk_state(1000.0, T0 + DAY_MS)
    update_on_mark(state, LIMITS, 950.0, T0 + 5 * HOUR)  # yesterday's mark arriving late
    assert state.day == (T0 + DAY_MS) // DAY_MS
    assert state.day_start_value == 1000.0


def test_circuit_breaker_after_five_losses_and_its_expiry_in_market_time():
    state = new_risk_state(1000.0, T0)
    for i in range(4):
        assert update_on_trade_closed(state, LIMITS, -1.0, T0 + i) == []
    assert state.consecutive_losses == 4
    events = update_on_trade_closed(state, LIMITS, -0.5, T0 + 10)
    assert events == ["circuit_breaker: 5 consecutive losses, entries paused until 2026-01-02T00:00:00+00:00"]
    assert state.circuit_breaker_until == T0 + 10 + 24 * HOUR
    assert state.consecutive_losses == 0
    assert entry_block_reason(state, T0 + 10 + 24 * HOUR - 1) == "circuit breaker until 2026-01-02T00:00:00+00:00"
    assert risk_summary(state, T0 + 11)["circuit_breaker"] is True
    assert entry_block_reason(state, T0 + 10 + 24 * HOUR) is None
    assert risk_summary(state, T0 + 10 + 24 * HOUR)["circuit_breaker"] is False


def test_a_win_resets_the_loss_streak():
    state = new_risk_state(1000.0, T0)
    for pnl in (-1.0, -1.0, -1.0, -1.0, 2.0, -1.0, -1.0, -1.0, -1.0):
        update_on_trade_closed(state, LIMITS, pnl, T0)
    assert state.consecutive_losses == 4
    assert state.circuit_breaker_until == 0


def test_risk_summary_shape():
    state = new_risk_state(1000.0, T0)
    assert risk_summary(state, T0) == {
        "kill_switch": False,
        "kill_reason": "",
        "circuit_breaker": False,
        "circuit_breaker_until": 0,
        "consecutive_losses": 0,
        "daily_loss_tripped": False,
        "drawdown_pct": 0.0,
        "peak_value": 1000.0,
        "resets": 0,
        "last_reset_ts": 0,
    }


def test_risk_state_round_trip_and_bad_fields():
    state = new_risk_state(1000.0, T0)
    update_on_mark(state, LIMITS, 300.0, T0 + 1)
    d = state.to_dict()
    assert RiskState.from_dict(d, "x") == state
    with pytest.raises(RecordError, match=r'^s\.risk\.peak_value: expected a number, got "x"$'):
        RiskState.from_dict({**d, "peak_value": "x"}, "s.risk")
    with pytest.raises(RecordError, match=r"^s\.risk\.kill_switch: expected true or false, got 1$"):
        RiskState.from_dict({**d, "kill_switch": 1}, "s.risk")
    with pytest.raises(RecordError, match=r"^s\.risk\.consecutive_losses: must be >= 0, got -1$"):
        RiskState.from_dict({**d, "consecutive_losses": -1}, "s.risk")
    with pytest.raises(RecordError, match=r"^s\.risk\.day: missing$"):
        RiskState.from_dict({k: v for k, v in d.items() if k != "day"}, "s.risk")
    with pytest.raises(RecordError, match=r"^s\.risk: expected an object, got \[\]$"):
        RiskState.from_dict([], "s.risk")


@pytest.mark.parametrize("key, value, last", [("circuit_breaker_until", 10**17, MAX_TS_MS),
                                             ("last_reset_ts", MAX_TS_MS + 1, MAX_TS_MS),
                                             ("day", MAX_DAY + 1, MAX_DAY)])
def test_a_risk_time_past_the_calendar_is_refused_on_load_not_when_an_order_shows_it(key, value, last):
    """Loaded, a circuit breaker until the year 3 million raised datetime's ValueError at every
    entry order of its book (``entry_block_reason`` names the date)."""
    d = new_risk_state(1000.0, T0).to_dict()
    with pytest.raises(RecordError, match=rf"^s\.risk\.{key}: must be at most {last} \(the year 9999\), got {value}$"):
        RiskState.from_dict({**d, key: value}, "s.risk")
    at_the_end = RiskState.from_dict({**d, "circuit_breaker_until": MAX_TS_MS, "day": MAX_DAY}, "s.risk")
    assert entry_block_reason(at_the_end, T0) == "circuit breaker until 9999-12-30T00:00:00+00:00"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_drawdown_pct": 0}, "max_drawdown_pct"),
        ({"max_position_pct": 101}, "max_position_pct"),
        ({"daily_loss_pct": float("nan")}, "daily_loss_pct"),
        ({"max_consecutive_losses": 0}, "max_consecutive_losses"),
        ({"circuit_breaker_ms": -1}, "circuit_breaker_ms"),
        ({"circuit_breaker_ms": 1.5}, "circuit_breaker_ms"),
    ],
)
def test_bad_limits_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"RiskLimits.{field}"):
        RiskLimits(**kwargs)


def test_update_on_mark_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        update_on_mark(new_risk_state(1000.0, T0), LIMITS, float("nan"), T0)


def test_reset_risk_clears_every_block_counts_the_reset_and_does_not_re_trip_at_once():
    limits = RiskLimits(max_drawdown_pct=50.0, daily_loss_pct=10.0, max_consecutive_losses=2,
                        circuit_breaker_ms=24 * HOUR)
    state = new_risk_state(1000.0, T0)
    update_on_trade_closed(state, limits, -1.0, T0 + HOUR)
    update_on_trade_closed(state, limits, -1.0, T0 + HOUR)  # breaker until T0 + 25h
    update_on_mark(state, limits, 400.0, T0 + 2 * HOUR)  # 60% down: kill switch and daily loss
    assert state.kill_switch and state.daily_loss_tripped and state.circuit_breaker_until == T0 + 25 * HOUR
    cleared = reset_risk(state, 400.0, T0 + 3 * HOUR)
    assert cleared == ["kill_switch (drawdown 60.0% >= 50% (peak 1000.00, value 400.00, at 2026-01-01T02:00:00+00:00))",
                       "circuit_breaker (until 2026-01-02T01:00:00+00:00)", "daily_loss (day start 1000.00)"]
    assert entry_block_reason(state, T0 + 3 * HOUR) is None
    assert (state.peak_value, state.day_start_value, state.consecutive_losses) == (400.0, 400.0, 0)
    summary = risk_summary(state, T0 + 3 * HOUR)
    assert summary["resets"] == 1 and summary["last_reset_ts"] == T0 + 3 * HOUR and not summary["kill_switch"]
    assert update_on_mark(state, limits, 395.0, T0 + 4 * HOUR) == []  # 1.25% below the new start: armed, not tripped
    assert RiskState.from_dict(state.to_dict()) == state


def test_reset_risk_of_an_untripped_strategy_changes_nothing():
    state = new_risk_state(1000.0, T0)
    before = state.to_dict()
    assert reset_risk(state, 1000.0, T0 + HOUR) == []
    assert state.to_dict() == before and state.resets == 0


def test_reset_risk_refuses_a_value_that_is_not_finite():
    with pytest.raises(ValueError, match="reset_risk: value must be a finite number, got nan"):
        reset_risk(new_risk_state(1000.0, T0), float("nan"), T0)


def test_a_risk_state_saved_before_resets_existed_loads_as_never_reset():
    old = {k: v for k, v in new_risk_state(1000.0, T0).to_dict().items() if k not in ("resets", "last_reset_ts")}
    state = RiskState.from_dict(old)
    assert (state.resets, state.last_reset_ts) == (0, 0)
    with pytest.raises(RecordError, match=r"risk.resets: must be >= 0, got -1"):
        RiskState.from_dict({**old, "resets": -1})
