"""Drives Larder's pages for people in a real headless Chromium (issue 15).

Run by tests/e2e/ui.rs against a running Larder it has filled:
    ui.py BASE OUT_DIR TOKEN UPSTREAM_NAME PRIVATE_NAME SECRET_PROJECT SECRET_NAME
Checks that every page loads without console errors, that search finds a package as you type,
that a private project's page asks for credentials and shows nothing without them, and saves
screenshots (home, project, search; light and dark) into OUT_DIR. Exits non-zero with one line
saying what failed.
"""

import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

base, out, token, upstream_name, private_name, secret_project, secret_name = sys.argv[1:8]


def browser(dark=False, width=1280):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},1000"):
        options.add_argument(arg)
    if width < 500:  # a phone: desktop windows cannot be narrower than 500 px
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": 844, "pixelRatio": 2}})
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def load(driver, path, expect_text):
    driver.get(base + path)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    if expect_text not in driver.page_source:
        fail(f"{path}: page does not show {expect_text!r}")
    errors = console_errors(driver)
    if errors:
        fail(f"{path}: console errors: {errors}")


driver = browser()
try:
    # Home: snippets with this server's own URL, the private package, the stats.
    load(driver, "/", "Point your tools here")
    if not driver.current_url.endswith("/-/ui/"):
        fail(f"a browser at / should land on /-/ui/, got {driver.current_url}")
    if f"--index-url {base}/simple/" not in driver.page_source:
        fail("home: the pip snippet does not carry this server's URL")
    load(driver, "/-/ui/", private_name)
    driver.save_screenshot(f"{out}/home.png")

    # Search as you type: the results appear without a page load.
    box = driver.find_element(By.ID, "q")
    box.send_keys(upstream_name[:4])
    link = WebDriverWait(driver, 10).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f'#results a[href$="packages/{upstream_name}"]')))
    if not driver.current_url.endswith("/-/ui/"):
        fail("search as you type navigated away")
    driver.save_screenshot(f"{out}/search.png")
    if console_errors(driver):
        fail(f"search: console errors: {console_errors(driver)}")
    # Nothing of another project leaks into this scope's search.
    box.clear()
    box.send_keys(secret_name)
    WebDriverWait(driver, 10).until(
        lambda d: "No project matches" in d.find_element(By.ID, "results").text)

    # The project page: versions newest first, files, metadata summary, install command.
    link = None
    driver.get(base + f"/-/ui/packages/{upstream_name}")
    load(driver, f"/-/ui/packages/{upstream_name}", "Install")
    versions = [e.text.split()[0] for e in driver.find_elements(By.CSS_SELECTOR, "details.version > summary")]
    if versions[:2] != ["2.0", "1.0"]:
        fail(f"project page: versions should be newest first, got {versions}")
    if f"{upstream_name}, a package for tests" not in driver.page_source:
        fail("project page: no summary from the stored METADATA")
    copy = driver.find_element(By.CSS_SELECTOR, "button.copy[data-copy^='pip install']")
    copy.click()
    driver.save_screenshot(f"{out}/project.png")
    if console_errors(driver):
        fail(f"project page: console errors: {console_errors(driver)}")

    # A private project: 401 and nothing of it without credentials; everything with them.
    driver.get(base + f"/-/ui/projects/{secret_project}/")
    time.sleep(0.5)
    if secret_name in driver.page_source:
        fail("a private project's page showed its packages without credentials")
    driver.get_log("browser")  # the 401 is logged as a failed load: expected here
    host = base.removeprefix("http://")
    driver.get(f"http://reader:{token}@{host}/-/ui/projects/{secret_project}/")
    WebDriverWait(driver, 10).until(lambda d: secret_name in d.page_source)
    driver.get(f"http://reader:{token}@{host}/-/ui/projects/{secret_project}/packages/{secret_name}")
    WebDriverWait(driver, 10).until(lambda d: "private" in d.page_source and secret_name in d.page_source)
finally:
    driver.quit()

# The same pages in dark mode and on a phone-sized screen.
driver = browser(dark=True, width=390)
try:
    load(driver, "/-/ui/", "Point your tools here")
    driver.save_screenshot(f"{out}/home-dark-phone.png")
    load(driver, f"/-/ui/packages/{upstream_name}", "Install")
    width, screen = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    if width > screen:
        fail(f"project page is {width}px wide on a {screen}px screen: it scrolls sideways")
    driver.save_screenshot(f"{out}/project-dark-phone.png")
finally:
    driver.quit()
print("ok")
