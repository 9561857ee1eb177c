"""Form bodies (RFC 8058 one-click unsubscribe, the preference page's form) are read as
JSON bodies are: within api.max_body_bytes, a chunked body included, or 413 with a JSON
error; a chunked body the server cannot find the end of is 411, never read as empty.
(Through a real gunicorn socket: tests/api/test_serve.py.)"""

from __future__ import annotations

import io

import pytest

from tests.api.conftest import headers, post_chunked
from tests.api.test_preferences import landed_events, token_for

LIMIT = 1024
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def padded(size: int) -> bytes:
    """A one-click form body of exactly `size` bytes: the field, then a padding field."""
    body = ONE_CLICK + b"&pad="
    return body + b"x" * (size - len(body))


@pytest.fixture
def small_app(make_app):  # type: ignore[no-untyped-def]
    return make_app(f"api.max_body_bytes={LIMIT}")


def subscribed(client, token: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(client.get(f"/v1/preferences/{token}").get_json()["subscribed"])


def test_a_chunked_one_click_body_at_the_limit_unsubscribes(small_app):
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    body = padded(LIMIT)
    assert len(body) == LIMIT
    response = post_chunked(client, f"/v1/unsubscribe/{token}", body, FORM)
    assert (response.status_code, response.get_json()) == (200, {"user_id": "u-ada", "subscribed": False})
    assert not subscribed(client, token)


def test_a_chunked_one_click_body_past_the_limit_is_413_not_cut_short(small_app):
    """The first LIMIT bytes hold a complete List-Unsubscribe=One-Click: a parser that stops
    at the limit would read a valid form and unsubscribe."""
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    response = post_chunked(client, f"/v1/unsubscribe/{token}", padded(LIMIT + 1), FORM)
    assert response.status_code == 413
    assert response.get_json() == {"error": "body_too_large", "message": f"the body is over {LIMIT} bytes"}
    assert subscribed(client, token)
    assert landed_events(small_app) == []


def test_a_huge_chunked_body_is_refused_after_reading_just_past_the_limit(small_app):
    """A body of a megabyte is read one byte past the limit, not to its end."""
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    stream = io.BytesIO(padded(1024 * 1024))
    response = post_chunked(client, f"/v1/unsubscribe/{token}", stream, FORM)
    assert response.status_code == 413
    assert stream.tell() == LIMIT + 1
    assert subscribed(client, token)


def test_a_form_with_a_content_length_over_the_limit_is_413_json(small_app):
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    response = client.post(f"/v1/unsubscribe/{token}", data=padded(LIMIT + 1), headers=FORM)
    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert subscribed(client, token)


def test_the_preference_page_form_is_bounded_too(small_app):
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    form = b"subscribed=no&topics=offers&pad="
    response = post_chunked(client, f"/preferences/{token}", form + b"x" * (LIMIT + 1 - len(form)), FORM)
    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert subscribed(client, token)
    saved = post_chunked(client, f"/preferences/{token}", form + b"x" * (LIMIT - len(form)), FORM)
    assert saved.status_code == 200
    assert client.get(f"/v1/preferences/{token}").get_json() == {
        "user_id": "u-ada", "subscribed": False, "topics": ["offers"], "frequency_cap_per_week": None}


def post_chunked_unterminated(client, path: str, body: bytes, extra: dict[str, str]):  # type: ignore[no-untyped-def]
    """A chunked request as a server that does not set wsgi.input_terminated hands it over:
    no Content-Length, and nothing that says where the body ends."""
    return client.post(path, headers={**extra, "Transfer-Encoding": "chunked"}, input_stream=io.BytesIO(body))


def test_a_chunked_form_the_server_cannot_end_is_411_not_an_empty_form(small_app):
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    response = post_chunked_unterminated(client, f"/v1/unsubscribe/{token}", ONE_CLICK, FORM)
    assert response.status_code == 411
    assert response.get_json()["error"] == "length_required"
    assert "Content-Length" in response.get_json()["message"]
    assert subscribed(client, token)
    page = post_chunked_unterminated(client, f"/preferences/{token}", b"subscribed=no", FORM)
    assert (page.status_code, page.get_json()["error"]) == (411, "length_required")
    assert subscribed(client, token)


@pytest.mark.parametrize(("path", "extra", "body"), [
    ("/v1/content:batchGet", {**headers("reader"), "Content-Type": "application/json"}, b'{"user_ids": ["u-ada"]}'),
    ("/v1/webhooks/generic", {"Content-Type": "application/json", "X-Tailor-Signature": "t=1,v1=00"},
     b'{"events": []}'),
])
def test_a_chunked_json_body_the_server_cannot_end_is_411(small_app, path, extra, body):
    response = post_chunked_unterminated(small_app.test_client(), path, body, extra)
    assert (response.status_code, response.get_json()["error"]) == (411, "length_required")


def test_a_chunked_put_the_server_cannot_end_is_411(small_app):
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    response = client.put(f"/v1/preferences/{token}", headers={"Content-Type": "application/json",
                                                                "Transfer-Encoding": "chunked"},
                          input_stream=io.BytesIO(b'{"subscribed": false}'))
    assert (response.status_code, response.get_json()["error"]) == (411, "length_required")
    assert subscribed(client, token)


def test_one_click_as_multipart_form_data(small_app):
    """RFC 8058 says the POST SHOULD be multipart/form-data (and MAY be urlencoded)."""
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n"
            f"--{boundary}--\r\n").encode()
    response = client.post(f"/v1/unsubscribe/{token}", data=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (response.status_code, response.get_json()) == (200, {"user_id": "u-ada", "subscribed": False})
    over = client.post(f"/v1/unsubscribe/{token_for(client, 'u-bob')}", data=body + b" " * LIMIT,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (over.status_code, over.get_json()["error"]) == (413, "body_too_large")


@pytest.mark.parametrize("body", [b"List-Unsubscribe=Yes", b"", b"List-Unsubscribe=One-Click"])
def test_one_click_needs_a_form_with_the_one_click_pair(small_app, body):
    """A JSON or text body is not a form: 400, nothing changes (the form pair itself only counts
    as a form)."""
    client = small_app.test_client()
    token = token_for(client, "u-ada")
    response = client.post(f"/v1/unsubscribe/{token}", data=body, headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.get_json()["error"]) == (400, "bad_request")
    assert subscribed(client, token)
