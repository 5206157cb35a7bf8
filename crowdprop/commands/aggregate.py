"""``crowdprop aggregate``: crowd answers (CSV) -> one label per task (CSV)."""
from __future__ import annotations

import argparse

NAME = "aggregate"
HELP = "aggregate yes/no crowd answers into one label and probability per task"
ORDER = 60

EPILOG = """\
input:
  ANSWERS.csv  columns task,worker,label  (label: 1/0, yes/no, true/false; one row per
               worker and task; extra columns are ignored; crowd-kit's long format)
  GOLD.csv     columns task,label         (tasks whose answer is known)

output:
  LABELS.csv   columns task,label,probability  (probability = P(label = 1), one row
               per answered task); a summary is printed.

methods:
  onecoin  one-coin Dawid-Skene (EM): one accuracy per worker; the default
  ds       Dawid-Skene (EM): sensitivity and specificity per worker
  mv       majority vote; a tie gets probability 0.5 and label 0

gold:
  With --gold, answered gold tasks are clamped to their known labels while fitting
  LABELS.csv, so the model learns worker skills from them. The accuracy printed is
  a fair evaluation: a second fit that does NOT see the gold, scored on the gold
  tasks that were answered (labels of that fit == gold labels).

example:
  crowdprop aggregate answers.csv --gold gold.csv --method ds -o labels.csv
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("answers", metavar="ANSWERS.csv", help="answers: task,worker,label")
    parser.add_argument("--gold", metavar="GOLD.csv", default=None, help="known labels: task,label")
    parser.add_argument("--method", choices=["onecoin", "ds", "mv"], default="onecoin",
                        help="aggregation method (default: onecoin)")
    parser.add_argument("-o", "--output", metavar="LABELS.csv", required=True,
                        help="where to write task,label,probability")


def run(args: argparse.Namespace) -> int:
    from ..quality.aggregate import aggregate, read_answers_csv, read_gold_csv, write_labels_csv

    answers = read_answers_csv(args.answers)
    gold = read_gold_csv(args.gold) if args.gold else None
    labels = aggregate(answers, method=args.method, gold=gold)
    write_labels_csv(args.output, labels)
    n_yes = int(labels["label"].sum())
    print(f"{answers['task'].nunique()} tasks, {answers['worker'].nunique()} workers, "
          f"{len(answers)} answers; method {args.method}")
    print(f"wrote {args.output}: {n_yes} labeled yes, {len(labels) - n_yes} labeled no")
    if gold is not None:
        blind = aggregate(answers, method=args.method, gold=None)
        scored = blind.merge(gold, on="task", suffixes=("", "_gold"))
        if len(scored) == 0:
            print(f"accuracy against gold: no task of {args.gold} was answered")
        else:
            right = int((scored["label"] == scored["label_gold"]).sum())
            print(f"accuracy against gold (fit without gold, on {len(scored)} answered gold tasks): "
                  f"{right / len(scored):.4f} ({right}/{len(scored)})")
    return 0
