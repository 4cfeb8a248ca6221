"""Dashboard tests in real headless Chromium (Selenium + chromedriver)."""
