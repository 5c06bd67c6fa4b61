import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from tasks.cluster.kube import map_api_error
from tasks.core import errors


def _api(status, body='{"message": "boom"}', headers=None):
    exc = ApiException(status=status, reason="Reason")
    exc.body = body
    exc.headers = headers or {}
    return exc


@pytest.mark.parametrize("status, cls, transient", [
    (404, errors.NotFound, False), (409, errors.Conflict, True), (403, errors.Forbidden, False),
    (401, errors.Forbidden, False), (422, errors.Invalid, False), (400, errors.Invalid, False),
    (429, errors.TooManyRequests, True), (500, errors.ServerError, True), (503, errors.ServerError, True),
    (418, errors.PermanentError, False),
])
def test_status_codes_map_to_taxonomy(status, cls, transient):
    mapped = map_api_error(_api(status), "get Secret ns/x")
    assert type(mapped) is cls
    assert errors.is_transient(mapped) is transient
    assert "get Secret ns/x" in str(mapped) and "boom" in str(mapped)


def test_retry_after_is_kept():
    mapped = map_api_error(_api(429, headers={"Retry-After": "3"}), "list")
    assert mapped.retry_after == 3.0


def test_connection_failures_are_transient():
    mapped = map_api_error(urllib3.exceptions.MaxRetryError(None, "/api", "refused"), "list")
    assert isinstance(mapped, errors.ServerError) and mapped.transient


def test_invalid_input_is_permanent_and_a_value_error():
    exc = errors.InvalidInput("email", "is not an address")
    assert not errors.is_transient(exc) and isinstance(exc, ValueError)
    assert str(exc) == "email: is not an address"


class _State:
    def __init__(self, exc):
        self.exc = exc

    def result(self):
        raise self.exc


def test_retry_condition_only_for_transient():
    assert errors.retry_if_transient(None, None, _State(errors.ServerError("x"))) is True
    assert errors.retry_if_transient(None, None, _State(errors.Conflict("x"))) is True
    assert errors.retry_if_transient(None, None, _State(errors.NotFound("x"))) is False
    assert errors.retry_if_transient(None, None, _State(RuntimeError("x"))) is False
