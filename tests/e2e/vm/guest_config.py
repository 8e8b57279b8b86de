"""Edit an installed /etc/pi-infer.yaml the way the e2e user does, and derive the host's
`pi-infer prepare` config from it.

Usage: guest_config.py CONFIG GUEST_MODELS PREPARE_CONFIG HOST_MODELS MODEL_CACHE_DIR

Both configs name the same model files (at GUEST_MODELS in the guest, HOST_MODELS here), so
the cache built on the host is the one the guest's daemon looks up.
"""

import sys

import yaml


def use_models(config: dict, models: str) -> None:
    config.setdefault("model", {}).update(
        weights=f"{models}/mobilenet_v2_qnnpack_reconstructed.pth",
        labels=f"{models}/imagenet_classes.txt",
    )


def main(
    config_path: str, guest_models: str, prepare_path: str, host_models: str, cache_dir: str
) -> None:
    with open(config_path) as f:
        config = yaml.safe_load(f) or {}
    config.setdefault("camera", {})["device"] = "/dev/video0"
    # A prediction line per frame, so a top_k change shows in the very next line.
    config.setdefault("output", {})["every_frame"] = True
    use_models(config, guest_models)
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    use_models(config, host_models)
    config["model"]["cache_dir"] = cache_dir
    with open(prepare_path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
