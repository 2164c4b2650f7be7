"""`train` says the physics prior's decisions once per run (`ptychopinn.logging_once`)."""

from __future__ import annotations

import logging

import pytest

import ptychopinn.api as api
from ptychopinn.config.schema import TrainingConfig
from ptychopinn.logging_once import each_message_once

WARNING = "the scan has 1e+05 photons per pattern, below 5e+05"


def _said(caplog, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_a_repeated_message_passes_once_inside_the_block_and_every_time_after(caplog) -> None:
    lg = logging.getLogger(api.PRIOR_LOGGER)
    with caplog.at_level(logging.INFO, logger=api.PRIOR_LOGGER):
        with each_message_once(api.PRIOR_LOGGER):
            lg.warning(WARNING)
            lg.warning(WARNING)
            lg.info("prior: %d whole-scan passes", 24)
            lg.info("prior: %d whole-scan passes", 28)  # another message: said
            lg.info("prior: %d whole-scan passes", 24)
            lg.info(WARNING)  # another level: said
        assert _said(caplog, WARNING) == 2
        assert _said(caplog, "24 whole-scan") == 1 and _said(caplog, "28 whole-scan") == 1
        lg.warning(WARNING)  # the filter is gone after the block
        assert _said(caplog, WARNING) == 3
    assert lg.filters == []


def test_the_filter_is_removed_when_the_block_raises() -> None:
    lg = logging.getLogger(api.PRIOR_LOGGER)
    with pytest.raises(RuntimeError), each_message_once(api.PRIOR_LOGGER):
        raise RuntimeError("boom")
    assert lg.filters == []


def test_train_says_the_priors_warning_once(monkeypatch, caplog, tmp_path) -> None:
    """The backend's training builds the prior twice (the training data, then the
    training scan's reconstruction); `api.train` passes the same warning once, and the
    next run says it again."""

    class Backend:
        calls: list = []

        @staticmethod
        def train(config, scan, resume=False, **kw):  # noqa: ANN001, ANN205
            Backend.calls.append(kw)
            for _ in range(2):
                logging.getLogger(api.PRIOR_LOGGER).warning(WARNING)
            return "result"

    monkeypatch.setattr(api, "get_backend", lambda name: Backend)
    cfg = TrainingConfig(output_dir=str(tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger=api.PRIOR_LOGGER):
        assert api.train(cfg, scan=None) == "result"
        assert _said(caplog, WARNING) == 1
        api.train(cfg, scan=None, callbacks=["cb"])
        assert _said(caplog, WARNING) == 2
    assert Backend.calls == [{"overwrite": False},
                             {"overwrite": False, "extra_callbacks": ["cb"]}]
    assert logging.getLogger(api.PRIOR_LOGGER).filters == []


def test_the_logger_train_filters_is_the_priors() -> None:
    from ptychopinn.models import scan_prior

    assert api.PRIOR_LOGGER == scan_prior.log.name
