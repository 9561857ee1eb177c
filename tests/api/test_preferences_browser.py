"""The preference centre page in a real headless browser (Debian's chromium and
chromedriver, which `make test` installs): a subscriber changes topics and frequency,
then unsubscribes, and the content API answers 410 at once."""

from __future__ import annotations

import pytest

from tests.api.conftest import headers

# A browser is a heavy install: make test-fast leaves this out (make test installs it).
pytestmark = pytest.mark.slow


def test_subscriber_changes_choices_then_unsubscribes_in_the_browser(app, client, served, browser):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def replaced(element):
        """Whether the page holding `element` is gone. Selenium's staleness_of expects a
        StaleElementReferenceException; while the old page is torn down, chromedriver may
        answer "Node with given id does not belong to the document" instead, which means
        the same. Any other error is one."""

        def check(_driver) -> bool:
            try:
                element.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as error:
                if "does not belong to the document" in str(error):
                    return True
                raise
            return False

        return check

    def save() -> None:
        # The form posts and the browser loads the answer: wait for the old page to go and
        # the new one to say it saved, or a lookup can land on the page being replaced.
        button = browser.find_element(By.ID, "save")
        button.click()
        WebDriverWait(browser, 20).until(replaced(button))
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


def test_another_site_cannot_frame_the_preference_page(client, served, browser, tmp_path):
    """Clickjacking, in the browser: a page of another origin (a local file) frames the
    preference page and, as a control, /healthz (which nothing forbids framing). The
    control's frame shows its JSON; the preference page's frame shows none of the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    token = client.get("/v1/users/u-ada/preference-link", headers=headers("prefs")).get_json()["token"]
    framing = tmp_path / "framing.html"
    framing.write_text(
        "<!doctype html><title>framing</title><script>let loaded = 0;</script>"
        f'<iframe id="control" src="{served}/healthz" onload="loaded += 1"></iframe>'
        f'<iframe id="victim" src="{served}/preferences/{token}" onload="loaded += 1"></iframe>',
        encoding="utf-8")
    browser.get(framing.as_uri())
    WebDriverWait(browser, 20).until(lambda driver: driver.execute_script("return loaded") == 2)
    browser.implicitly_wait(0)  # an absent element is the expected answer below: no waiting for it

    browser.switch_to.frame(browser.find_element(By.ID, "control"))
    assert '"status":"ok"' in browser.find_element(By.TAG_NAME, "body").text.replace(" ", "")
    browser.switch_to.default_content()

    browser.switch_to.frame(browser.find_element(By.ID, "victim"))
    assert browser.find_elements(By.ID, "topic-offers") == []
    assert browser.find_elements(By.ID, "subscribed-no") == []
    assert browser.find_elements(By.ID, "save") == []
    browser.switch_to.default_content()
