"""The SUPERB tasks, collection of their results, learning-rate selection and SUPERB_S.

Experiment layout (what ``egs2/superb/run.sh`` writes under ``EXP``):

    EXP/<TASK>/<setting>/[fold<k>/]train.log   stdout of training (dev scores)
    EXP/<TASK>/<setting>/[fold<k>/]test*.log   stdout of evaluation on the test split
                                              (ASV: one per checkpoint; SD: dscore results)

``<setting>`` is ``lr<LR>`` (the learning-rate search) or, for QbE, ``layer<L>`` (DTW per
layer, no training: ``dev.log`` / ``test.log`` hold the TWV scorer's output). Per task, the
setting with the best mean dev score (over folds) is chosen and its mean test score reported.

SUPERB_S (SUPERB @ SLT 2022): each metric is mapped linearly from the FBANK baseline (0) to
the best system (1), a task's score is the mean over its metrics, SUPERB_S is 1000 times
the mean over tasks. Reference values live in ``egs2/superb/conf/superb_reference.yaml``.

    python -m s3prl_upstream.superb collect EXP --reference conf/superb_reference.yaml
    python -m s3prl_upstream.superb best-setting EXP/KS
    python -m s3prl_upstream.superb task-info KS      # shell assignments for run.sh
"""

import argparse
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

NUMBER = r"(-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class Metric:
    """A reported metric: where s3prl prints it and how to read it."""

    name: str
    higher_better: bool
    test_pattern: str  # regex with one group, searched line by line in test*.log
    dev_pattern: Optional[str] = None  # in train.log (dev.log for QbE); None: no dev set
    scale: float = 1.0  # the printed number times scale = the number SUPERB reports
    dev_scale: Optional[float] = None  # for the dev pattern's number, if not ``scale``

    def read(self, text: str, split: str) -> List[float]:
        """Every score of ``split`` ("dev" or "test") printed in ``text``, in SUPERB's units."""
        if split == "dev":
            pattern, scale = self.dev_pattern, self.dev_scale or self.scale
        else:
            pattern, scale = self.test_pattern, self.scale
        return [float(m.group(1)) * scale for m in re.finditer(pattern, text, flags=re.MULTILINE)]

    def better(self, values: Sequence[float]) -> float:
        return max(values) if self.higher_better else min(values)


@dataclass(frozen=True)
class Task:
    """One SUPERB task as run with s3prl's run_downstream."""

    name: str
    downstream: str  # run_downstream -d
    config: str  # relative to the s3prl clone's package dir (CLONE/s3prl)
    metrics: Tuple[Metric, ...]
    test_split: str = "test"  # run_downstream -t
    best_checkpoint: str = "dev-best.ckpt"  # what training saves as best on dev
    folds: Tuple[str, ...] = ()  # ER's cross-validation folds
    setting_prefix: str = "lr"
    notes: str = field(default="", compare=False)


def _accuracy() -> Metric:
    return Metric("Acc", True, rf"test acc: {NUMBER}", rf"dev acc: {NUMBER}", scale=100.0)


TASKS: Dict[str, Task] = {
    t.name: t
    for t in (
        Task("PR", "ctc", "downstream/ctc/libriphone.yaml",
             (Metric("PER", False, rf"test per: {NUMBER}", rf"dev per: {NUMBER}", 100.0),),
             notes="LibriSpeech train-clean-100/dev-clean/test-clean; needs the clone's ctc/corpus"),
        Task("ASR", "asr", "downstream/asr/config.yaml",
             (Metric("WER", False, rf"test-clean wer: {NUMBER}", rf"dev-clean wer: {NUMBER}"),),
             test_split="test-clean", best_checkpoint="dev-clean-best.ckpt",
             notes="LibriSpeech-100, no LM; length tables from s3prl_upstream.superb_data"),
        Task("KS", "speech_commands", "downstream/speech_commands/config.yaml", (_accuracy(),),
             notes="Speech Commands v0.01 and its test set"),
        Task("QbE", "quesst14_dtw", "downstream/quesst14_dtw/config.yaml",
             (Metric("MTWV", True, rf"maxTWV\s*[:=]?\s*{NUMBER}", rf"maxTWV\s*[:=]?\s*{NUMBER}"),),
             test_split="eval", best_checkpoint="", setting_prefix="layer",
             notes="no training: DTW on each layer (-l), best layer on dev; MTWV from QUESST14's "
                   "scoring/score-TWV-Cnxe.sh ('actTWV: v  maxTWV: v  Threshold: t')"),
        Task("SID", "voxceleb1", "downstream/voxceleb1/config.yaml", (_accuracy(),),
             notes="VoxCeleb1 dev/wav + test/wav, veri_test_class.txt split"),
        Task("ASV", "sv_voxceleb1", "downstream/sv_voxceleb1/config.yaml",
             (Metric("EER", False, rf"test-EER: {NUMBER}", None, 100.0),),
             best_checkpoint="",
             notes="no dev set: every saved checkpoint is tested, the best test EER is reported "
                   "(SUPERB's protocol)"),
        Task("SD", "diarization", "downstream/diarization/config.yaml",
             (Metric("DER", False, rf"\*\*\*\s*OVERALL\s*\*\*\*\s+{NUMBER}",
                     rf"mode dev acc \S+ der {NUMBER}", scale=1.0, dev_scale=100.0),),
             best_checkpoint="best-states-dev.ckpt",
             notes="Libri2Mix; dscore's OVERALL DER in scoring/result_* (best threshold/median, "
                   "as the clone's report.sh); the dev DER is s3prl's frame-level estimate"),
        Task("IC", "fluent_commands", "downstream/fluent_commands/config.yaml", (_accuracy(),),
             notes="Fluent Speech Commands"),
        Task("SF", "ctc", "downstream/ctc/snips.yaml",
             (Metric("F1", True, rf"test slot_type_f1: {NUMBER}", rf"dev slot_type_f1: {NUMBER}", 100.0),
              Metric("CER", False, rf"test slot_value_cer: {NUMBER}", rf"dev slot_value_cer: {NUMBER}", 100.0)),
             notes="Audio SNIPS; the dev setting is chosen on F1 (the config's first metric)"),
        Task("ER", "emotion", "downstream/emotion/config.yaml", (_accuracy(),),
             folds=("fold1", "fold2", "fold3", "fold4", "fold5"),
             notes="IEMOCAP, 5-fold cross validation (test_fold); mean over folds"),
    )  # fmt: skip
}


@dataclass
class TaskResult:
    task: str
    setting: str
    dev: Dict[str, float]
    test: Dict[str, float]


def _read_logs(paths: Sequence[Path]) -> str:
    return "\n".join(p.read_text(errors="replace") for p in paths)


def _run_dirs(setting_dir: Path, task: Task) -> List[Path]:
    """The experiment directories of one setting: one per fold, or the setting itself."""
    if not task.folds:
        return [setting_dir]
    return [setting_dir / fold for fold in task.folds if (setting_dir / fold).is_dir()]


def _scores(run_dir: Path, task: Task, metric: Metric, split: str) -> List[float]:
    if split == "dev":
        if metric.dev_pattern is None:
            return []
        logs = [run_dir / ("dev.log" if task.setting_prefix == "layer" else "train.log")]
        return metric.read(_read_logs([p for p in logs if p.exists()]), "dev")
    logs = sorted(run_dir.glob("test*.log")) + sorted((run_dir / "scoring").glob("result_*"))
    return metric.read(_read_logs(logs), "test")


def setting_scores(setting_dir: Path, task: Task, split: str) -> Dict[str, float]:
    """Metric -> mean over folds of each fold's best score on ``split``; metrics without
    scores in every fold are left out."""
    runs = _run_dirs(setting_dir, task)
    result = {}
    for metric in task.metrics:
        per_run = [_scores(run, task, metric, split) for run in runs]
        if runs and all(per_run) and (not task.folds or len(runs) == len(task.folds)):
            result[metric.name] = statistics.fmean(metric.better(values) for values in per_run)
    return result


def choose_setting(task_dir: Path, task: Task) -> Optional[str]:
    """The setting (``lr...`` / ``layer...``) with the best mean dev score of the task's first
    metric; for a task without a dev set (ASV), the best test score, as SUPERB's ASV protocol
    does. None when no setting has such scores yet."""
    first = task.metrics[0]
    split = "dev" if first.dev_pattern else "test"
    scored = {}
    for setting_dir in sorted(task_dir.glob(f"{task.setting_prefix}*")):
        scores = setting_scores(setting_dir, task, split)
        if first.name in scores:
            scored[setting_dir.name] = scores[first.name]
    if not scored:
        return None
    best = first.better(list(scored.values()))
    return next(name for name, value in scored.items() if value == best)


def collect_task(task_dir: Path, task: Task) -> Optional[TaskResult]:
    """The chosen setting of a task with its dev and test scores; None until it is tested."""
    setting = choose_setting(task_dir, task)
    if setting is None:
        return None
    test = setting_scores(task_dir / setting, task, "test")
    if len(test) < len(task.metrics):
        return None
    return TaskResult(task.name, setting, setting_scores(task_dir / setting, task, "dev"), test)


def collect(exp_dir: Path, tasks: Sequence[str] = tuple(TASKS)) -> List[TaskResult]:
    """Results of every task in ``tasks`` that has test results under ``exp_dir``."""
    results = []
    for name in tasks:
        result = collect_task(Path(exp_dir) / name, TASKS[name])
        if result is not None:
            results.append(result)
    return results


def load_reference(path: Path) -> Dict[str, Dict[str, dict]]:
    """task -> metric -> {fbank, best, higher_better, ...} from the reference YAML."""
    data = yaml.safe_load(Path(path).read_text())
    reference = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(reference, dict):
        raise ValueError(f"{path}: expected a 'tasks' mapping of task -> metric -> reference values")
    return reference


def normalized_score(value: float, fbank: float, best: float, higher_better: bool) -> float:
    """``value`` mapped linearly so that FBANK's score is 0 and the best system's is 1."""
    if best == fbank or (best > fbank) != higher_better:
        direction = "higher" if higher_better else "lower"
        raise ValueError(f"best ({best}) must be {direction} than FBANK ({fbank}) for a {direction}-is-better metric")
    return (value - fbank) / (best - fbank)


def superb_s(results: Sequence[TaskResult], reference: Dict[str, Dict[str, dict]]) -> Tuple[float, Dict[str, float]]:
    """SUPERB_S over the tasks in ``results`` and each task's normalised score (0..1).

    Raises ValueError naming any task or metric whose reference value is missing (null,
    e.g. marked "to verify").
    """
    per_task, missing = {}, []
    for result in results:
        scores = []
        for metric in TASKS[result.task].metrics:
            ref = reference.get(result.task, {}).get(metric.name) or {}
            if ref.get("fbank") is None or ref.get("best") is None:
                missing.append(f"{result.task}/{metric.name}")
                continue
            if ref.get("higher_better", metric.higher_better) != metric.higher_better:
                raise ValueError(f"reference {result.task}/{metric.name}: higher_better must be {metric.higher_better}")
            scores.append(normalized_score(result.test[metric.name], ref["fbank"], ref["best"], metric.higher_better))
        if scores:
            per_task[result.task] = statistics.fmean(scores)
    if missing:
        raise ValueError(f"reference values missing (to verify) for {', '.join(missing)}")
    if not per_task:
        raise ValueError("no task results to score")
    return 1000.0 * statistics.fmean(per_task.values()), per_task


def format_table(results: Sequence[TaskResult], per_task: Optional[Dict[str, float]] = None) -> str:
    """A Markdown table: task, metric, chosen setting, dev, test (and normalised score)."""
    header = "| task | metric | setting | dev | test |" + (" normalised |" if per_task is not None else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        for metric in TASKS[result.task].metrics:
            dev = result.dev.get(metric.name)
            dev_text = "-" if dev is None else f"{dev:.4g}"
            row = f"| {result.task} | {metric.name} | {result.setting} | {dev_text} | {result.test[metric.name]:.4g} |"
            if per_task is not None:
                row += f" {per_task[result.task]:.3f} |" if result.task in per_task else " - |"
            lines.append(row)
    return "\n".join(lines)


def _task_info(name: str) -> str:
    """Shell assignments describing a task, for run.sh."""
    task = TASKS[name]
    values = {
        "downstream": task.downstream, "config": task.config, "test_split": task.test_split,
        "best_ckpt": task.best_checkpoint, "folds": " ".join(task.folds), "setting_prefix": task.setting_prefix,
    }  # fmt: skip
    return "\n".join(f"{key}='{value}'" for key, value in values.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    collect_parser = commands.add_parser("collect", help="results table and SUPERB_S")
    collect_parser.add_argument("exp_dir", type=Path)
    collect_parser.add_argument("--reference", type=Path, help="superb_reference.yaml; omit for no SUPERB_S")
    collect_parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    best_parser = commands.add_parser("best-setting", help="print the setting of EXP/<TASK> chosen on dev")
    best_parser.add_argument("task_dir", type=Path)
    info_parser = commands.add_parser("task-info", help="print a task's run_downstream settings (shell)")
    info_parser.add_argument("task", choices=list(TASKS))
    args = parser.parse_args(argv)

    if args.command == "task-info":
        print(_task_info(args.task))
        return 0
    if args.command == "best-setting":
        if args.task_dir.name not in TASKS:
            raise ValueError(f"{args.task_dir}: the directory name must be a task ({', '.join(TASKS)})")
        setting = choose_setting(args.task_dir, TASKS[args.task_dir.name])
        if setting is None:
            print(f"no scores to choose a setting from under {args.task_dir}", file=sys.stderr)
            return 1
        print(setting)
        return 0
    results = collect(args.exp_dir, args.tasks)
    if not results:
        print(f"no test results under {args.exp_dir}", file=sys.stderr)
        return 1
    if args.reference is None:
        print(format_table(results))
        return 0
    try:
        score, per_task = superb_s(results, load_reference(args.reference))
    except ValueError as error:
        print(format_table(results))
        print(f"\nSUPERB_S not computed: {error}")
        return 0
    print(format_table(results, per_task))
    print(f"\nSUPERB_S over {len(per_task)} task(s) ({', '.join(per_task)}): {score:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
