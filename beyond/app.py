"""The classifier as a web page (chainlit, as the book's ch06/04_user_interface): label, P(spam) and why.

`python train_classifier.py serve --checkpoint outputs` serves it on http://127.0.0.1:8000. Each message gets
its label, P(spam) (prediction.class_probabilities) and its tokens coloured by occlusion (look_inside: red pushed
towards spam, blue towards ham). Chainlit keeps its files (config, translations, session files) in a temporary
folder deleted when the server stops, so nothing lands where you run it. Nothing calls outside: chainlit 2 has no
telemetry, its Literal AI data layer is switched off here, and its page loses its links to Google's fonts and
KaTeX's stylesheet.
"""

import html
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import tempfile

from beyond import look_inside
from beyond.bonus_training import saved_average_embeddings
from beyond.checkpoints import load_classifier
from beyond.cli import print_error, user_errors
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from beyond.model_setup import resolve_device
from beyond.prediction import class_probabilities, encode_for_classifier

SPAM = look_inside.SPAM  # class 1 is spam, as in the chapter

CHAINLIT_CONFIG = """\
[project]
session_timeout = 3600

[features]
unsafe_allow_html = true        # the coloured tokens are HTML (escaped by look_inside.tokens_html)
user_message_markdown = false   # what a user types is shown as text, never as HTML
edit_message = false

[features.spontaneous_file_upload]
enabled = false

[UI]
name = "Spam classifier"
default_theme = "light"
cot = "hidden"
custom_build = "build"          # chainlit's page without its links to Google's fonts and KaTeX's stylesheet

[meta]
generated_by = "{version}"
"""

WELCOME = """\
# A GPT-2 spam classifier

Type a text message: the classifier fine-tuned in chapter 6 answers its label and P(spam), and colours each
token by how much deleting it lowers P(spam) (red: pushed towards spam, blue: towards ham).
"""


class SpamPage:
    """One classifier behind the page: loaded on first use (again after a failure), answering in markdown."""

    def __init__(self, checkpoint, device="cpu", models_dir=None, max_length=None, labels=None):
        self.checkpoint, self.device, self.models_dir = checkpoint, device, models_dir
        self.max_length, self.labels = max_length, labels
        self.loaded = None

    def load(self):
        """(model, tokenizer, settings) of the classifier; a user error (ValueError, OSError...) when it fails."""
        if self.loaded is None:
            model, info = load_classifier(self.checkpoint, device=resolve_device(self.device),
                                          models_dir=self.models_dir)
            extra = info.get("extra") or {}
            padded = info.get("padded", True)
            settings = {"max_length": self.max_length or info.get("max_length"), "pad": padded,
                        "labels": list(self.labels or info.get("label_names") or ["ham", "spam"]),
                        "trainable_token_pos": extra.get("trainable_token_pos", "last"),
                        "average_embeddings": saved_average_embeddings(extra),
                        "pad_token_id": extra.get("pad_token_id", look_inside.PAD_TOKEN_ID)}
            self.loaded = model, get_gpt2_tokenizer(self.models_dir), settings
        return self.loaded

    def greeting(self):
        """The first message of a chat: what to do, or why the classifier cannot answer."""
        try:
            self.load()
        except user_errors() as exc:
            return problem(exc)
        return f"Type a message and the classifier {html.escape(str(self.checkpoint))} says whether it is spam."

    def reply(self, text):
        """The answer to one message: label and P(spam), its tokens coloured, a note when it was cut."""
        if not text.strip():
            return "The message is empty; type the text you want classified."
        try:
            model, tokenizer, s = self.load()
        except user_errors() as exc:
            return problem(exc)
        device = next(model.parameters()).device
        options = {k: s[k] for k in ("trainable_token_pos", "average_embeddings", "pad_token_id")}
        probabilities = class_probabilities([text], model, tokenizer, device, s["max_length"], pad=s["pad"],
                                            **options)[0]
        label_id = int(probabilities.argmax())
        label = s["labels"][label_id] if label_id < len(s["labels"]) else str(label_id)
        # the ids class_probabilities read, each token scored by occlusion (P(spam) lost when it is deleted)
        limit = model.pos_emb.weight.shape[0]
        ids = encode_for_classifier(text, tokenizer, limit, s["max_length"], s["pad_token_id"], pad=s["pad"])
        scores = look_inside.attributions(model, ids, "occlusion", keep_length=s["pad"] and bool(s["max_length"]),
                                          **options)
        tokens = [t.replace("\n", "\u21b5") for t in look_inside.token_strings(ids[:len(scores)], tokenizer)]
        lines = [f"**{html.escape(label)}** · P(spam) = {probabilities[SPAM]:.4f}",
                 look_inside.tokens_html(tokens, scores),  # one line: a blank line would end the HTML block
                 "Red tokens pushed towards spam, blue ones towards ham (P(spam) lost when the token is deleted)."]
        total = len(tokenizer.encode(text, disallowed_special=()))
        if total > len(tokens):
            why = "its training length" if s["max_length"] else "the model's context length"
            lines.append(f"*Note: the message has {total} tokens; the classifier read only the first "
                         f"{len(tokens)} ({why}).*")
        return "\n\n".join(lines)


def problem(exc):
    """A user error as one sentence for the page."""
    return "The classifier cannot answer: " + html.escape(" ".join(str(exc).split()) or type(exc).__name__)


def write_chainlit_files(root):
    """Chainlit's config (HTML in answers, no uploads) and welcome page in root, where chainlit looks for them."""
    os.makedirs(os.path.join(root, ".chainlit"))
    with open(os.path.join(root, ".chainlit", "config.toml"), "w", encoding="utf-8") as f:
        f.write(CHAINLIT_CONFIG.format(version=importlib.metadata.version("chainlit")))
    with open(os.path.join(root, "chainlit.md"), "w", encoding="utf-8") as f:
        f.write(WELCOME)
    write_offline_frontend(os.path.join(root, "build"))
    target = os.path.join(root, "page.py")  # chainlit runs a file: the callbacks are registered by serve
    with open(target, "w", encoding="utf-8") as f:
        f.write("# The spam classifier's page: beyond.app.serve registers its callbacks.\n")
    return target


def write_offline_frontend(build):
    """chainlit's built page in build (its files linked), its index.html without links to other sites."""
    dist = os.path.join(importlib.util.find_spec("chainlit").submodule_search_locations[0], "frontend", "dist")
    os.makedirs(build)
    for name in os.listdir(dist):
        if name != "index.html":
            os.symlink(os.path.join(dist, name), os.path.join(build, name))
    with open(os.path.join(dist, "index.html"), encoding="utf-8") as f:
        page = re.sub(r'<link[^>]*href="https://[^"]*"[^>]*>', "", f.read())  # fonts, preconnects, KaTeX
    with open(os.path.join(build, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)


def serve(page, host="127.0.0.1", port=8000):
    """Run the chainlit server for page until interrupted (blocking); chainlit's files live in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="spam-app-") as root:
        target = write_chainlit_files(root)
        os.environ.update(CHAINLIT_APP_ROOT=root, CHAINLIT_HOST=host, CHAINLIT_PORT=str(port))
        for name in ("LITERAL_API_KEY", "DATABASE_URL"):  # chainlit would send the chats to a data layer
            os.environ.pop(name, None)
        import chainlit as cl  # only now: chainlit reads CHAINLIT_APP_ROOT when it is imported
        from chainlit.cli import run_chainlit
        from chainlit.config import config

        @cl.on_chat_start
        async def greet():
            await cl.Message(content=await cl.make_async(page.greeting)()).send()

        @cl.on_message
        async def answer(message):
            await cl.Message(content=await cl.make_async(page.reply)(message.content)).send()

        @cl.on_app_shutdown
        def remove_chainlit_files():  # chainlit ends the process (os._exit) right after this: no `with` exit
            shutil.rmtree(root, ignore_errors=True)

        config.run.headless = True  # print the address instead of opening a browser
        print(f"Serving {page.checkpoint} at http://{host}:{port} (Ctrl-C stops it)", flush=True)
        run_chainlit(target)


def add_serve_arguments(parser):
    """The serve command's flags (--device and --debug are every command's)."""
    parser.add_argument("--checkpoint", required=True,
                        help="a training run's output folder or its classifier.pt, or the chapter's "
                             "review_classifier.pth")
    parser.add_argument("--models-dir", default=None, help="where the GPT-2 files are (a small checkpoint's base)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="pad/truncate to this many tokens (default: the file's; a chapter state_dict: 120)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="class names in class-id order (default: the file's; a chapter state_dict: "
                             "'not spam' 'spam')")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (default: 8000)")


def run_serve(args):
    """`train_classifier.py serve --checkpoint DIR`: the classifier as a web page until Ctrl-C."""
    if args.max_length is not None and args.max_length < 1:
        raise ValueError(f"--max-length must be at least 1 (got {args.max_length})")
    if importlib.util.find_spec("chainlit") is None:
        print_error("The page needs chainlit, which is not installed; pip install -r requirements.txt (or pip "
                    "install -e .[app]).")
        return 1
    page = SpamPage(args.checkpoint, args.device, args.models_dir, args.max_length, args.labels)
    try:
        page.load()  # now, so the first message is quick and a problem shows here too
    except user_errors() as exc:
        print_error(exc)
        print("The page will say so, and try again with each message.", file=sys.stderr)
    try:
        serve(page, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0
