"""The vLLM side of `generation.engine: vllm`: a process that runs in vLLM's own environment.

vLLM pins a transformers older than Paddock's and pulls CUDA builds of torchvision and torchaudio,
so it lives in its own virtual environment (`make install-vllm` builds `.venv-vllm`) and this file
runs there as a script, importing nothing from Paddock: alignment/engines/vllm_client.py starts it, as TRL's
`vllm-serve` keeps vLLM in a process of its own.

Protocol: one JSON object per line on stdin, one JSON reply per line on the original stdout. vLLM's
own logging (and that of the engine process it spawns) goes to stderr, which the client keeps in a
log file. Requests:
  {"op": "start", "model": dir, "engine": {LLM keyword arguments}}
  {"op": "generate", "prompts": [[ids]], "seeds": [int|null], "sampling": {SamplingParams kwargs}}
      -> {"done": k} after each finished prompt, then {"ok": true, "outputs": [[{"tokens", "logprobs"}]]}
  {"op": "load_weights", "path": dir}  (a directory holding model.safetensors)
  {"op": "exit"}
A failure replies {"ok": false, "error": "..."} and the worker keeps serving.
"""

import json
import os
import shutil
import sys
import time
import traceback


def reply_channel():
    """Keep the real stdout for replies and send everything else printed to stderr; processes vLLM
    spawns inherit fd 1 = stderr too."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return replies


def sampled_logprobs(completion) -> list[float]:
    """The log-prob of each sampled token (vLLM returns a dict per position that includes it)."""
    if completion.logprobs is None:
        return []
    pairs = zip(completion.token_ids, completion.logprobs, strict=True)
    return [step[token].logprob for token, step in pairs]


class Worker:
    def __init__(self, send):
        self.send, self.llm, self.model_dir = send, None, None

    def start(self, model: str, engine: dict) -> dict:
        from vllm import LLM

        self.model_dir = model
        begin = time.perf_counter()
        self.llm = LLM(model=model, **engine)
        import vllm

        return {"ok": True, "vllm": vllm.__version__, "seconds": time.perf_counter() - begin}

    def generate(self, prompts: list, seeds: list, sampling: dict) -> dict:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        for index, (ids, seed) in enumerate(zip(prompts, seeds, strict=True)):
            params = SamplingParams(**sampling, seed=seed, output_kind=RequestOutputKind.FINAL_ONLY)
            engine.add_request(str(index), {"prompt_token_ids": ids}, params)
        outputs, done = [None] * len(prompts), 0
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    outputs[int(out.request_id)] = [
                        {"tokens": list(c.token_ids), "logprobs": sampled_logprobs(c)} for c in out.outputs
                    ]
                    done += 1
                    self.send({"done": done})
        return {"ok": True, "outputs": outputs}

    def load_weights(self, path: str) -> dict:
        begin = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        # Cached prefixes hold keys and values computed with the old weights.
        self.llm.reset_prefix_cache()
        return {"ok": True, "seconds": time.perf_counter() - begin}


def main() -> None:
    # This file's directory is sys.path[0]; nothing there is for vLLM's environment.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    replies = reply_channel()

    def send(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")

    worker = Worker(send)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            return
        try:
            send(getattr(worker, op)(**request))
        except Exception as error:  # the client shows the message; the traceback goes to the log
            traceback.print_exc()
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            send({"ok": False, "error": f"{type(error).__name__}: {' '.join(lines[:4])}"})
    # stdin closed without "exit": the client died (killed, say) and cannot remove the weights it
    # wrote, a model's size in /dev/shm, so the worker does.
    if worker.model_dir:
        shutil.rmtree(worker.model_dir, ignore_errors=True)


if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports this module
    main()
