"""RecBole 1.2.1 SASRec (or GRU4Rec, BERT4Rec, S3Rec: --model) on a split exported by `bench export recbole`, with timings.

Runs in the RecBole venv (/work/recbole-venv), NOT the project venv. Trains SASRec (CE loss,
2 layers x 2 heads, hidden 64) on the exported training prefixes, early-stops on full-ranking
validation Recall@20, then evaluates the best-validation weights on the test cases. Writes one
JSON with per-epoch training seconds, per-epoch validation seconds, losses, validation metrics,
best epoch, test metrics and peak RSS.

    /work/recbole-venv/bin/python benchmarks/recbole_sasrec.py --data /tmp/recbole_data/scientific \
        --seed 0 --epochs 200 --out results/recbole_sasrec_seed0.json

S3Rec runs RecBole's two stages: --pretrain-epochs of pre-training (fixed, as RecBole's
PretrainTrainer does; batch --pretrain-batch-size), then fine-tuning from the last pre-training
epoch. Its attributes are the `class` field of <name>.item, written by
`bench export recbole --attributes text` from our S3-Rec's own attribute table.

RecBole writes log/ and log_tensorboard/ into its working directory; this script runs it inside
--workdir (default: a fresh temporary folder, removed afterwards) so nothing lands in the repo.
The best model is kept in memory (no checkpoint files, so no torch>=2.6 weights_only issue).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

METRICS = ["Recall", "NDCG", "MRR", "Hit", "Precision"]
TOPK = [5, 10, 20, 50]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# the harness's defaults for each model (baselines/sasrec.py, baselines/gru4rec.py)
MODEL_CONFIG = {
    "SASRec": {"loss_type": "CE", "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
               "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "gelu",
               "layer_norm_eps": 1e-12, "initializer_range": 0.02},
    "GRU4Rec": {"loss_type": "CE", "embedding_size": 64, "hidden_size": 128, "num_layers": 1,
                "dropout_prob": 0.3},
    # ft_ratio: RecBole's share of training rows whose last item alone is masked (its default 0.5)
    "BERT4Rec": {"loss_type": "CE", "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
                 "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "gelu",
                 "layer_norm_eps": 1e-12, "initializer_range": 0.02, "mask_ratio": 0.2, "ft_ratio": 0.5},
    "S3Rec": {"loss_type": "CE", "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
              "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "gelu",
              "layer_norm_eps": 1e-12, "initializer_range": 0.02, "item_attribute": "class", "mask_ratio": 0.2,
              "aap_weight": 0.2, "mip_weight": 1.0, "map_weight": 1.0, "sp_weight": 0.5},
}


class TimeLimit(Exception):
    """--max-seconds ran out before the next epoch."""


def numpy2_aliases() -> None:
    """RecBole 1.2.1 aliases np.float to np.float_ and friends, which numpy 2 removed; give them back."""
    import numpy as np

    for name, value in {"float_": np.float64, "int_": np.int64, "bool_": np.bool_, "complex_": np.complex128,
                        "object_": np.object_, "unicode_": np.str_}.items():
        if not hasattr(np, name):
            setattr(np, name, value)


def build_config_dict(a, data_path: Path, workdir: Path) -> dict:
    return {
        # data: pre-split leave-one-out files, one training sample per row
        "data_path": str(data_path.parent),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"],
                     **({"item": ["item_id", "class"]} if a.model == "S3Rec" else {})},
        # without this alias RecBole gives item_id_list its OWN token vocabulary, separate from item_id
        "alias_of_item_id": ["item_id_list"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "MAX_ITEM_LIST_LENGTH": a.max_len,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        # model
        **MODEL_CONFIG[a.model],
        # training
        "train_neg_sample_args": None,
        "learner": "adam",
        "learning_rate": a.lr,
        "weight_decay": 0.0,
        "train_batch_size": a.train_batch_size,
        "epochs": a.epochs,
        "stopping_step": a.patience,
        "eval_step": 1,
        "clip_grad_norm": None,
        "shuffle": True,
        # evaluation: full ranking over all items (RecBole sets the [PAD] item's score to -inf)
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": METRICS,
        "topk": TOPK,
        "valid_metric": "Recall@20",
        "valid_metric_bigger": True,
        "eval_batch_size": a.eval_batch_size,
        "metric_decimal_place": 10,
        # environment
        "gpu_id": "0" if a.device == "cuda" else "",
        "use_gpu": a.device == "cuda",
        "seed": a.seed,
        "reproducibility": True,
        "show_progress": False,
        "worker": 0,
        "checkpoint_dir": str(workdir / "saved"),
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "state": a.log_level,
        # S3Rec: this config is the fine-tuning stage's, from the last pre-training epoch's weights
        **({"train_stage": "finetune", "pretrain_epochs": a.pretrain_epochs, "save_step": a.pretrain_epochs,
            "pre_model_path": str(workdir / "saved" / f"S3Rec-{data_path.name}-{a.pretrain_epochs}.pth")}
           if a.model == "S3Rec" else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="exported folder <out>/<name> (holds <name>.train.inter ...)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--model", choices=sorted(MODEL_CONFIG), default="SASRec")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10, help="RecBole stopping_step")
    ap.add_argument("--train-batch-size", type=int, default=2048)
    ap.add_argument("--eval-batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pretrain-epochs", type=int, default=10, help="S3Rec: pre-training epochs (fixed)")
    ap.add_argument("--pretrain-batch-size", type=int, default=256, help="S3Rec: pre-training batch (rows)")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="start no epoch after this many seconds of training; the best epoch so far is tested")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the CPU box has 2 cores)")
    ap.add_argument("--workdir", default=None, help="RecBole's cwd for log/ (default: temp dir, removed)")
    ap.add_argument("--keep-anomaly-mode", action="store_true",
                    help="keep torch autograd anomaly detection on, as importing RecBole's sequential models leaves "
                    "it (recbole/model/sequential_recommender/sine.py calls set_detect_anomaly(True) at import); "
                    "default: switch it off (same numerics, about half the training CPU time)")
    ap.add_argument("--save-weights", default=None,
                    help="also write the best weights and RecBole's item tokens (id -> our item id) as .npz, "
                    "for benchmarks/recbole_crosseval.py")
    ap.add_argument("--log-level", default="WARNING", help="RecBole logger level (INFO shows per-epoch logs)")
    a = ap.parse_args()

    data = Path(a.data).resolve()
    name = data.name
    for part in ("train", "valid", "test"):
        if not (data / f"{name}.{part}.inter").is_file():
            sys.exit(f"missing {data / f'{name}.{part}.inter'} (run benchmarks/recbole_export.py first)")
    out = Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    own_workdir = a.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="recbole_run_")) if own_workdir else Path(a.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(a.threads)
    _orig_load = torch.load

    def _load(*args, **kw):  # RecBole checkpoints pickle the Config; torch>=2.6 defaults to weights_only
        kw.setdefault("weights_only", False)
        return _orig_load(*args, **kw)

    torch.load = _load

    numpy2_aliases()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model import sequential_recommender
    from recbole.trainer import S3RecTrainer, Trainer
    from recbole.utils import init_logger, init_seed

    t_import = time.perf_counter() - t_start
    anomaly_after_import = torch.is_anomaly_enabled()
    if not a.keep_anomaly_mode:
        torch.autograd.set_detect_anomaly(False)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        config_dict = build_config_dict(a, data, workdir)
        config = Config(model=a.model, dataset=name, config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        torch.set_num_threads(a.threads)  # in case anything above reset it

        t0 = time.perf_counter()
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        data_seconds = time.perf_counter() - t0

        # vocabulary sanity: history lists and targets share one token space; [PAD] is id 0
        id2tok_item = dataset.field2id_token["item_id"]
        id2tok_list = dataset.field2id_token["item_id_list"]
        assert id2tok_item is id2tok_list or list(id2tok_item) == list(id2tok_list), "item_id_list not aliased"
        assert id2tok_item[0] == "[PAD]"
        export_info = {}
        if (data / "export_info.json").is_file():
            export_info = json.loads((data / "export_info.json").read_text())
            assert dataset.item_num == export_info["n_items"] + 1, (dataset.item_num, export_info["n_items"])
        sizes = {"train": len(train_data.dataset), "valid": len(valid_data.dataset), "test": len(test_data.dataset)}
        if export_info:
            expected = {"train": export_info["n_train_rows"], "valid": export_info["n_valid"],
                        "test": export_info["n_test"]}
            assert sizes == expected, (sizes, expected)

        pretrain = None
        if a.model == "S3Rec":  # RecBole's stage 1: a fixed number of epochs, weights saved at the last
            pre_config = Config(model=a.model, dataset=name, config_dict={
                **config_dict, "train_stage": "pretrain", "train_batch_size": a.pretrain_batch_size})
            init_seed(pre_config["seed"], pre_config["reproducibility"])
            pre_train_data = data_preparation(pre_config, create_dataset(pre_config))[0]  # build() runs once
            pre_model = sequential_recommender.S3Rec(pre_config, pre_train_data._dataset).to(pre_config["device"])
            pre_trainer = S3RecTrainer(pre_config, pre_model)
            pretrain = {"epochs": a.pretrain_epochs, "batch_size": a.pretrain_batch_size, "per_epoch": []}
            orig_pre = pre_trainer._train_epoch

            def timed_pretrain(train_data, epoch_idx, *args, **kw):
                s = time.perf_counter()
                loss = orig_pre(train_data, epoch_idx, *args, **kw)
                pretrain["per_epoch"].append({"epoch": epoch_idx, "train_seconds": time.perf_counter() - s,
                                              "train_loss": float(sum(loss) if isinstance(loss, tuple) else loss)})
                return loss

            pre_trainer._train_epoch = timed_pretrain
            t0 = time.perf_counter()
            pre_trainer.fit(pre_train_data, show_progress=False, verbose=True)
            pretrain["seconds"] = time.perf_counter() - t0
            assert Path(config["pre_model_path"]).is_file(), config["pre_model_path"]
            del pre_model, pre_trainer

        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        assert torch.is_anomaly_enabled() == bool(a.keep_anomaly_mode and anomaly_after_import)
        model = getattr(sequential_recommender, a.model)(config, train_data._dataset).to(config["device"])
        n_params = sum(p.numel() for p in model.parameters())
        trainer = Trainer(config, model)

        epochs = []
        state = {"best_epoch": None, "best_state": None}
        orig_train, orig_valid = trainer._train_epoch, trainer._valid_epoch

        def timed_train(train_data, epoch_idx, *args, **kw):
            if a.max_seconds and time.perf_counter() - t_fit > a.max_seconds:
                raise TimeLimit
            s = time.perf_counter()
            loss = orig_train(train_data, epoch_idx, *args, **kw)
            epochs.append({"epoch": epoch_idx, "train_seconds": time.perf_counter() - s,
                           "train_loss": float(sum(loss) if isinstance(loss, tuple) else loss)})
            return loss

        def timed_valid(valid_data, *args, **kw):
            s = time.perf_counter()
            score, result = orig_valid(valid_data, *args, **kw)
            epochs[-1].update(valid_seconds=time.perf_counter() - s, valid_score=float(score),
                              valid={k: float(v) for k, v in result.items()})
            return score, result

        def keep_best(epoch, verbose=True, **kw):  # replaces checkpoint files: best weights in memory
            state["best_epoch"] = epoch
            state["best_state"] = copy.deepcopy(model.state_dict())

        trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
        trainer._save_checkpoint = keep_best

        t_fit = time.perf_counter()
        stopped_by_time = False
        try:
            trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=True)
        except TimeLimit:  # --max-seconds: evaluate the best epoch so far, and say so
            stopped_by_time = True
        fit_seconds = time.perf_counter() - t_fit

        model.load_state_dict(state["best_state"])
        if a.save_weights:  # plain arrays (npz, no pickle): RecBole id i is our item int(tokens[i])
            import numpy as np

            tokens = [0 if t == "[PAD]" else int(t) for t in dataset.field2id_token["item_id"]]
            arrays = {k: v.detach().cpu().numpy() for k, v in state["best_state"].items()}
            np.savez(a.save_weights, item_tokens=np.asarray(tokens, dtype=np.int64), **arrays)
        t0 = time.perf_counter()
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        test_seconds = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    train_s = [e["train_seconds"] for e in epochs]
    valid_s = [e["valid_seconds"] for e in epochs if "valid_seconds" in e]
    result = {
        "framework": "recbole",
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
        "model": a.model,
        "data": str(data),
        "dataset": name,
        "export_info": {k: v for k, v in export_info.items() if k != "split_definition"},
        "seed": a.seed,
        "device": str(config["device"]),
        "hyperparameters": {
            **MODEL_CONFIG[a.model], "max_len": a.max_len, "lr": a.lr,
            "train_batch_size": a.train_batch_size, "eval_batch_size": a.eval_batch_size,
            "max_epochs": a.epochs, "patience": a.patience, "valid_metric": "recall@20",
        },
        "pretrain": pretrain,
        "autograd_anomaly_mode": {"after_recbole_import": anomaly_after_import,
                                  "during_training": bool(a.keep_anomaly_mode and anomaly_after_import)},
        "n_params": n_params,
        "n_items_recbole": int(dataset.item_num),  # includes the [PAD] item (id 0, score forced to -inf)
        "sizes": sizes,
        "epochs_run": len(epochs),
        "best_epoch": state["best_epoch"],
        "stopped_by_time_limit": stopped_by_time,
        "best_valid_score": float(trainer.best_valid_score),
        "best_valid": {k: float(v) for k, v in (trainer.best_valid_result or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "timing": {
            "import_seconds": t_import,
            "data_seconds": data_seconds,
            "fit_seconds": fit_seconds,
            "test_eval_seconds": test_seconds,
            "train_epoch_seconds_mean": sum(train_s) / len(train_s),
            "train_epoch_seconds_median": sorted(train_s)[len(train_s) // 2],
            "valid_epoch_seconds_mean": sum(valid_s) / len(valid_s) if valid_s else None,
            "valid_epoch_seconds_median": sorted(valid_s)[len(valid_s) // 2] if valid_s else None,
            "total_seconds": time.perf_counter() - t_start,
        },
        "peak_rss_mib": peak_rss_mib(),
        "per_epoch": epochs,
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(json.dumps({k: result[k] for k in ("best_epoch", "epochs_run", "test", "timing", "peak_rss_mib")},
                     indent=2))


if __name__ == "__main__":
    main()
