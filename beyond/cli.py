"""The command line: `python train_classifier.py [COMMAND] [flags]`; with no command it trains.

Every command runs through one wrapper (run_command): a user error ends in one `error:` line and exit code 1,
bad flags exit 2, Ctrl-C exits 130 (outputs are written atomically, so nothing is half-written), `--debug`
shows the full traceback, `--device` is `auto` unless given. A command's module is imported only when that
command runs, so `--help` costs little more than importing torch. Nothing imports this module.
"""

import argparse
import difflib
import importlib
import re
import sys
import warnings

# name: (module, one line for --help). The module has add_<name>_arguments(parser) and run_<name>(args).
COMMANDS = {
    "train": ("beyond.train_command", "fine-tune GPT-2 into a spam classifier (the default command)"),
    "predict": ("beyond.classifier_commands", "label messages with a saved classifier"),
    "explain": ("beyond.classifier_commands", "show which tokens pushed a message towards spam or ham"),
    "attack": ("beyond.classifier_commands", "try to fool a saved classifier, with and without defences"),
    "serve": ("beyond.app", "serve a saved classifier as a web page (chainlit)"),
}
DEFAULT_COMMAND = "train"


def _device_arg(value):
    """--device: auto, cpu, mps, cuda or cuda:N (whether it is there is checked when the command runs)."""
    name = value.strip().lower()
    if name in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(:\d+)?", name):
        return name
    raise argparse.ArgumentTypeError(f"{value!r} is not a device; choose auto, cpu, cuda, cuda:N or mps")


def _add_common_flags(parser, defaults=True):
    """--device and --debug, valid before or after the command (after it, only a given value counts)."""
    common = parser.add_argument_group("every command")
    common.add_argument("--device", type=_device_arg, default="auto" if defaults else argparse.SUPPRESS,
                        help="auto (default: CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:N or mps")
    common.add_argument("--debug", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="show the full traceback on errors")


def normalise_flag_spelling(argv):
    """Accept --num_epochs as --num-epochs (the chapter's bonus scripts use underscores); values are untouched."""
    out, passthrough = [], False
    for token in argv:
        if passthrough or not token.startswith("--") or token == "--":
            passthrough = passthrough or token == "--"
            out.append(token)
            continue
        name, eq, value = token.partition("=")
        out.append(name.replace("_", "-") + eq + value)
    return out


def _with_command(argv):
    """(command, argv with the command in it): "train" is put in when none is given; None for the top --help."""
    i = 0
    while i < len(argv) and (argv[i] == "--debug" or argv[i].startswith("--device")):
        i += 2 if argv[i] == "--device" else 1
    token = argv[i] if i < len(argv) else None
    if token in COMMANDS:
        return token, argv
    if token in ("-h", "--help"):
        return None, argv
    if token is None or token.startswith("-"):
        return DEFAULT_COMMAND, argv[:i] + [DEFAULT_COMMAND] + argv[i:]
    close = difflib.get_close_matches(token, COMMANDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    print(f"error: unknown command {token!r}{hint}; choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
    raise SystemExit(2)


def _command_module(name):
    """The module holding a command (imported now: heavy libraries load only for the command that runs)."""
    return importlib.import_module(COMMANDS[name][0])


def build_parser(command=None):
    """The parser of every command; only the given command's flags are added (the others' modules stay unloaded)."""
    parser = argparse.ArgumentParser(
        prog="train_classifier.py",
        description="Fine-tune GPT-2 into a spam classifier (chapter 6) and use it.",
        epilog=f"With no command, {DEFAULT_COMMAND}s: `train_classifier.py --test-mode` trains a tiny model offline "
               "in seconds. `train_classifier.py COMMAND --help` lists a command's flags.")
    _add_common_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    common = argparse.ArgumentParser(add_help=False)
    _add_common_flags(common, defaults=False)
    for name, (_module, help_line) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_line, description=help_line[:1].upper() + help_line[1:] + ".",
                                  parents=[common])
        if name == command:
            getattr(_command_module(name), f"add_{name}_arguments")(sub)
    return parser


def parse_args(argv):
    """The Namespace of a command line (flags spelled with - or _); "train" when no command is named."""
    argv = normalise_flag_spelling(argv)
    command, argv = _with_command(argv)
    return build_parser(command).parse_args(argv)


def user_errors():
    """The error policy: bad values, missing or corrupt files, no network are the user's to fix (one line)."""
    from gpt_download import DownloadError  # DataError and CheckpointError are ValueErrors

    return (ValueError, OSError, DownloadError)


def is_user_error(exc):
    """True for an error the user fixes (see user_errors): it ends in one line, not a traceback."""
    return isinstance(exc, user_errors())


def print_error(exc):
    """A user error as one line on stderr: "error: <the message>"."""
    print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)


def _show_warning_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the CLI: "warning: <message>" on stderr."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def run_command(args):
    """Run args.command; returns the exit code (0 ok, 1 user error, 130 Ctrl-C). --debug lets errors through."""
    try:
        with warnings.catch_warnings():
            if not args.debug:
                # Warnings for people (e.g. "12 texts were truncated") as one line each, without source lines.
                warnings.showwarning = _show_warning_line
            result = getattr(_command_module(args.command), f"run_{args.command}")(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("Interrupted: no output files were written.", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or not is_user_error(exc):
            raise
        print_error(exc)
        return 1
    return result if isinstance(result, int) else 0  # a command may return its exit code


def main(argv=None):
    """The CLI: returns the exit code (0 ok, 1 user error, 2 bad flags or command, 130 interrupted)."""
    return run_command(parse_args(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())
