"""pytest plugin (loaded with `-p pytest_skip_code`): a run in which nothing failed but
something was skipped exits with code 77, which CMake's SKIP_RETURN_CODE makes ctest report
as "Skipped" instead of "Passed". The skip reasons are printed by `-rs`."""

SKIP_CODE = 77


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == 0 and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = SKIP_CODE
