"""The preference centre page in a real headless browser (Debian's chromium and
chromedriver, which `make test` installs): a subscriber changes topics and frequency,
then unsubscribes, and the content API answers 410 at once."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from pipelines.services.kafka_broker import free_port
from tests.api.conftest import headers

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# A browser is a heavy install: make test-fast leaves this out (make test installs it).
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _browser_installed() -> None:
    # make setup installs them: a missing browser is a broken set-up, not a reason to skip.
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("Debian's chromium and chromium-driver are not installed: make test installs them")


@pytest.fixture
def served(app) -> Iterator[str]:
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(20)
    driver.implicitly_wait(5)  # a lookup waits for its element on a slow, shared machine
    yield driver
    driver.quit()


def test_subscriber_changes_choices_then_unsubscribes_in_the_browser(app, client, served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def save() -> None:
        # The form posts and the browser loads the answer: wait for the old page to go and
        # the new one to say it saved, or a lookup can land on the page being replaced.
        button = browser.find_element(By.ID, "save")
        button.click()
        WebDriverWait(browser, 20).until(expected_conditions.staleness_of(button))
        WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.ID, "saved")))

    token = client.get("/v1/users/u-ada/preference-link", headers=headers("prefs")).get_json()["token"]
    browser.get(f"{served}/preferences/{token}")
    assert browser.title == "Email preferences"
    assert browser.find_element(By.ID, "subscribed-yes").is_selected()
    browser.find_element(By.ID, "topic-offers").click()
    browser.find_element(By.ID, "topic-back_in_stock").click()
    Select(browser.find_element(By.ID, "frequency")).select_by_value("2")
    save()
    assert browser.find_element(By.ID, "saved").text == "Your choices are saved."
    assert client.get(f"/v1/preferences/{token}").get_json() == {
        "user_id": "u-ada", "subscribed": True, "topics": ["offers", "back_in_stock"], "frequency_cap_per_week": 2}
    assert browser.find_element(By.ID, "topic-offers").is_selected()
    assert Select(browser.find_element(By.ID, "frequency")).first_selected_option.text == "At most 2 a week"

    browser.find_element(By.ID, "subscribed-no").click()
    save()
    assert browser.find_element(By.ID, "saved").is_displayed()
    assert browser.find_element(By.ID, "subscribed-no").is_selected()
    gone = client.get("/v1/content/u-ada", headers=headers("reader"))
    assert (gone.status_code, gone.get_json()["reason"]) == (410, "unsubscribed")


def test_a_tampered_link_shows_an_error_page(served, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{served}/preferences/not-a-real-token")
    assert browser.find_element(By.ID, "error").text == "this link is not valid"
