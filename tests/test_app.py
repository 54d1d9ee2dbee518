"""The chainlit app (beyond/app.py): its answers, then the page itself in headless Chromium driven by Selenium."""

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import gpt_model
from beyond import cli
from beyond.app import SpamPage
from beyond.checkpoints import save_classifier
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from beyond.model_setup import build_model
from beyond.prediction import predict_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
SPAM_TEXT = "WINNER!! Claim your free prize now"
LONG_TEXT = "Hi, are we still meeting at the station at six tonight or should I come to yours first?"
MAX_LENGTH = 12  # shorter than LONG_TEXT, longer than SPAM_TEXT


def save_tiny_classifier(path, seed=1, padded=True):
    """A test-mode classifier as training saves it (small checkpoint: the new head, the base from its seed)."""
    model, cfg = build_model(test_mode=True, seed=123)
    torch.manual_seed(seed)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    return save_classifier(path, model, cfg, ["ham", "spam"], MAX_LENGTH, padded=padded)


def num_tokens(text):
    return len(get_gpt2_tokenizer().encode(text))


def p_spam(checkpoint, text, **options):
    """The package's own (label, P(spam)) for text, to compare the page with."""
    [(label, p)] = predict_from_checkpoint(checkpoint, [text], **options)
    return label, p if label in ("spam", "junk") else 1 - p


# ---------------------------------------------------------------------------------------------------------
# The answers (no browser)
# ---------------------------------------------------------------------------------------------------------


def test_reply_gives_label_probability_and_one_coloured_span_per_token(tmp_path):
    checkpoint = save_tiny_classifier(tmp_path / "classifier.pt")
    reply = SpamPage(tmp_path).reply(SPAM_TEXT)
    label, p = p_spam(checkpoint, SPAM_TEXT)
    assert reply.startswith(f"**{label}** · P(spam) = {p:.4f}")
    assert reply.count("<span title=") == num_tokens(SPAM_TEXT) and "background: rgba(" in reply
    assert "Note:" not in reply


def test_reply_notes_a_message_cut_to_the_training_length(tmp_path):
    save_tiny_classifier(tmp_path / "classifier.pt")
    reply = SpamPage(tmp_path).reply(LONG_TEXT)
    assert f"has {num_tokens(LONG_TEXT)} tokens; the classifier read only the first {MAX_LENGTH} (its training" in reply
    assert reply.count("<span title=") == MAX_LENGTH


def test_reply_for_a_classifier_trained_without_padding_scores_what_it_reads(tmp_path):
    checkpoint = save_tiny_classifier(tmp_path / "classifier.pt", padded=False)
    reply = SpamPage(tmp_path).reply(LONG_TEXT)
    label, p = p_spam(checkpoint, LONG_TEXT)
    assert reply.startswith(f"**{label}** · P(spam) = {p:.4f}")
    assert reply.count("<span title=") == MAX_LENGTH and f"read only the first {MAX_LENGTH} (" in reply


def test_serve_is_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--help"])
    assert exc.value.code == 0 and "--checkpoint" in capsys.readouterr().out


def test_serve_without_chainlit_says_how_to_install_it(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "chainlit" else find_spec(name, *a))
    assert cli.main(["serve", "--checkpoint", "outputs"]) == 1
    assert capsys.readouterr().err.startswith("error: The page needs chainlit, which is not installed; pip install")


def test_reply_shows_newlines_without_ending_the_html(tmp_path):
    save_tiny_classifier(tmp_path / "classifier.pt")
    reply = SpamPage(tmp_path).reply("Call\n\nnow")
    assert "\n\n" not in reply.split("\n\n")[1] and "\u21b5" in reply  # the tokens stay one HTML block


def test_empty_message_gets_one_sentence(tmp_path):
    page = SpamPage(tmp_path / "never-loaded")
    assert page.reply(" \n ") == "The message is empty; type the text you want classified."


def test_bad_checkpoint_gets_one_sentence_and_is_loaded_again_once_fixed(tmp_path):
    path = tmp_path / "classifier.pt"
    page = SpamPage(path)
    assert page.reply(SPAM_TEXT).startswith("The classifier cannot answer: Classifier file")
    path.write_bytes(b"not a checkpoint")
    assert "is truncated, corrupt or not a classifier" in page.greeting()
    save_tiny_classifier(path)
    assert "P(spam) = " in page.reply(SPAM_TEXT)


def test_the_chapters_state_dict_with_max_length_and_labels(tmp_path):
    torch.manual_seed(0)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], 2)
    path = tmp_path / "review_classifier.pth"
    torch.save(model.state_dict(), path)  # as the chapter saves it
    reply = SpamPage(path, max_length=5, labels=["fine", "junk"]).reply(SPAM_TEXT)
    label, p = p_spam(path, SPAM_TEXT, max_length=5, label_names=["fine", "junk"])
    assert reply.startswith(f"**{label}** · P(spam) = {p:.4f}")
    assert "read only the first 5 (" in reply


# ---------------------------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WAIT = 30  # seconds any one thing in the browser may take


def _missing_for_browser():
    """Why the browser tests cannot run here, or None."""
    for module in ("chainlit", "selenium"):  # looked for, not imported: importing chainlit writes in the cwd
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -r requirements.txt)"
    if not (CHROMIUM and CHROMEDRIVER):
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    return None


browser_test = pytest.mark.skipif(_missing_for_browser() is not None, reason=str(_missing_for_browser()))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium that reaches 127.0.0.1 only (the page's font and KaTeX links fail fast)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request, for outside_requests
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--window-size=1200,800",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(WAIT)
            yield driver
        finally:
            driver.quit()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Loaded by the server's Python before anything else: records every outgoing connection and name lookup.
RECORD_CONNECTIONS = """\
import os, sys
_log = open(os.environ["APP_TEST_CONNECTIONS"], "a", encoding="utf-8")
def _record(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        _log.write(f"{event} {args[1] if event == 'socket.connect' else args[0]!r}\\n")
        _log.flush()
sys.addaudithook(_record)
"""


@contextlib.contextmanager
def serving(checkpoint, tmp_path):
    """`train_classifier.py serve` on a free port of 127.0.0.1 until the block ends (then always stopped).

    It runs in tmp_path/cwd and leaves it and its temporary folder empty, and connects nowhere, even with
    chainlit's Literal AI data layer asked for (at a refused local address) by the environment.
    """
    port, log = _free_port(), tmp_path / "serve.log"
    cwd, hook, tmp = tmp_path / "cwd", tmp_path / "hook", tmp_path / "tmp"
    for folder in (cwd, hook, tmp):
        folder.mkdir()
    (hook / "sitecustomize.py").write_text(RECORD_CONNECTIONS)
    connections = tmp_path / "connections.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]),
           "TMPDIR": str(tmp), "APP_TEST_CONNECTIONS": str(connections), "LITERAL_API_KEY": "test",
           "LITERAL_API_URL": f"http://127.0.0.1:{_free_port()}"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(REPO / "train_classifier.py"), "serve", "--checkpoint",
                                   str(checkpoint), "--port", str(port)], cwd=cwd, stdout=out,
                                  stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert server.poll() is None, f"the server stopped: {log.read_text()}"
            assert time.time() < deadline, f"the server did not listen within 60 s: {log.read_text()}"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert "Traceback" not in log.read_text()
    assert not connections.exists() or connections.read_text() == ""
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []  # chainlit's files went with the server


def outside_requests(driver):
    """The web addresses the page asked for, other than the server's, since the last call."""
    messages = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"}
    return sorted(u for u in urls if u.startswith(("http:", "https:")) and not u.startswith("http://127.0.0.1:"))


def answers(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, '[data-step-type="assistant_message"]')


def open_page(driver, url):
    """Load the page and wait for its greeting; returns the greeting's text."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, WAIT).until(lambda d: answers(d) and answers(d)[0].text.strip())
    return answers(driver)[0].text


def ask(driver, text):
    """Type text into the chat, send it, and return the answer's element once it has come."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(answers(driver))
    box = WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "chat-input"))
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: len(answers(d)) > before and answers(d)[-1].text.strip())
    return answers(driver)[-1]


@browser_test
def test_page_answers_with_label_probability_and_coloured_tokens(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    checkpoint = save_tiny_classifier(tmp_path / "run" / "classifier.pt")
    with serving(tmp_path / "run", tmp_path) as url:
        assert "says whether it is spam" in open_page(browser, url)
        answer = ask(browser, SPAM_TEXT)
        label, p = p_spam(checkpoint, SPAM_TEXT)
        assert answer.text.startswith(f"{label} · P(spam) = {p:.4f}")
        spans = answer.find_elements(By.CSS_SELECTOR, "span[title]")
        assert "".join(s.get_attribute("textContent") for s in spans) == SPAM_TEXT
        assert len(spans) == num_tokens(SPAM_TEXT)
        assert all("background: rgba(" in s.get_attribute("style") for s in spans)
        assert "Note:" not in answer.text

        assert f"read only the first {MAX_LENGTH} (" in ask(browser, LONG_TEXT).text

        # chainlit's composer will not send an empty message: nothing happens, and the page goes on answering
        count = len(answers(browser))
        browser.find_element(By.ID, "chat-input").send_keys("   " + Keys.ENTER)
        time.sleep(1)
        assert len(answers(browser)) == count
        browser.find_element(By.ID, "chat-input").clear()
        assert "P(spam) = " in ask(browser, "ok see you later").text
        assert outside_requests(browser) == []  # no fonts, stylesheets or anything else from other sites


@browser_test
def test_page_says_one_sentence_for_a_bad_checkpoint_and_keeps_serving(browser, tmp_path):
    path = tmp_path / "classifier.pt"
    path.write_bytes(b"this is no classifier")
    with serving(path, tmp_path) as url:
        greeting = open_page(browser, url)
        assert greeting.startswith("The classifier cannot answer:") and "corrupt" in greeting
        answer = ask(browser, SPAM_TEXT).text
        assert answer.startswith("The classifier cannot answer:") and "Traceback" not in answer
        save_tiny_classifier(path)  # fixed while the server runs: the next message is answered
        assert "P(spam) = " in ask(browser, SPAM_TEXT).text
