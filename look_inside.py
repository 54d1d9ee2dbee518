"""Look inside the spam classifier: error analysis, token attributions, attention, thresholds.

Beyond-chapter helpers for notebook 09 and the `explain` subcommand; they import the chapter
modules and are never imported by them.
"""


def occlusion_scores(score_fn, pieces):
    """Return, per piece, P(spam) of the whole message minus P(spam) with that piece removed.

    `pieces` are strings that concatenate to the message; `score_fn(list_of_texts)` returns one
    P(spam) per text. Works for any classifier (GPT-2, TF-IDF, ...): one batched call.
    """
    pieces = list(pieces)
    texts = ["".join(pieces)] + ["".join(pieces[:i] + pieces[i + 1:]) for i in range(len(pieces))]
    scores = [float(s) for s in score_fn(texts)]
    if len(scores) != len(texts):
        raise ValueError(f"score_fn returned {len(scores)} scores for {len(texts)} texts; it must return one "
                         "P(spam) per text.")
    return [scores[0] - s for s in scores[1:]]
