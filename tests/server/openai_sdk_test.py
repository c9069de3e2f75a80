"""The official `openai` Python SDK against `mosaic serve` (builtin:tiny).

Run by openai_sdk_test.sh, which starts the server and passes its base URL
and two tenants' API keys in MOSAIC_BASE_URL / MOSAIC_API_KEY /
MOSAIC_OTHER_KEY. Covers: chat with an image, whole and streamed; upload
then reference; another tenant's reference refused; every bad input of the
front door's error table with its status; 401 for a wrong key; /metrics
parsed by prometheus-client's text-format parser, its counters moving as
requests run.
"""
import base64
import json
import os
import struct
import sys
import zlib

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

MODEL = "builtin:tiny"


def png(size=56, header_only=False, claimed=None):
    """A random RGB PNG; `claimed` overrides the header's size (with no pixels)."""
    raw = b"".join(b"\x00" + os.urandom(size * 3) for _ in range(size))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    w = h = claimed or size
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if header_only or claimed:
        return head
    return head + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def data_url(image):
    return "data:image/png;base64," + base64.b64encode(image).decode()


def image_messages(url, n_images=1):
    parts = [{"type": "image_url", "image_url": {"url": url}} for _ in range(n_images)]
    parts.append({"type": "text", "text": "What is in the image?"})
    return [{"role": "user", "content": parts}]


def metrics(base):
    """name -> {labels tuple -> value} from /metrics, via the Prometheus parser."""
    text = httpx.get(base.rsplit("/v1", 1)[0] + "/metrics", timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m, name, **labels):
    return m.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def expect_status(status, fn, what):
    try:
        fn()
    except openai.APIStatusError as e:
        assert e.status_code == status, (what, e.status_code, e.response.text)
        body = e.response.json()
        assert body["error"]["message"] and body["error"]["type"], (what, body)
        return
    raise AssertionError(f"{what}: accepted, expected HTTP {status}")


def main():
    base = os.environ["MOSAIC_BASE_URL"]
    key = os.environ["MOSAIC_API_KEY"]
    other_key = os.environ["MOSAIC_OTHER_KEY"]
    client = openai.OpenAI(base_url=base, api_key=key, timeout=60, max_retries=0)
    other = openai.OpenAI(base_url=base, api_key=other_key, timeout=60, max_retries=0)
    auth = {"Authorization": f"Bearer {key}"}
    before = metrics(base)

    models = client.models.list()
    assert models.data[0].id == MODEL, models
    context = models.data[0].model_extra.get("max_model_len")

    # -- chat with an image, whole and streamed ---------------------------------------
    messages = image_messages(data_url(png()))
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5,
                                           temperature=0)
    assert whole.choices[0].finish_reason in ("stop", "length"), whole
    assert whole.usage.completion_tokens >= 1, whole.usage
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    text, usage, finish = "", None, None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    # The same prompt again: the prefix cache holds every full 16-token block.
    assert usage.prompt_tokens_details.cached_tokens >= usage.prompt_tokens - 16, usage
    assert whole.usage.prompt_tokens_details.cached_tokens == 0, whole.usage

    completion = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3)
    assert completion.choices[0].finish_reason in ("stop", "length")

    # -- log-probabilities as the SDK reads them, whole and streamed ------------------
    lp = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4,
                                        temperature=0, logprobs=True, top_logprobs=3)
    content = lp.choices[0].logprobs.content
    assert len(content) == lp.usage.completion_tokens, lp
    assert "".join(c.token for c in content) == lp.choices[0].message.content, content
    for c in content:
        assert c.logprob <= 0 and len(c.top_logprobs) == 3, c
        assert c.top_logprobs[0].logprob == c.logprob, c  # greedy: the chosen is the likeliest
        assert bytes(c.bytes) == c.token.encode(), c
    streamed = [choice.logprobs.content[0]
                for chunk in client.chat.completions.create(
                    model=MODEL, messages=messages, max_tokens=4, temperature=0,
                    logprobs=True, top_logprobs=3, stream=True)
                for choice in chunk.choices if choice.logprobs and choice.logprobs.content]
    assert [c.token for c in streamed] == [c.token for c in content], (streamed, content)
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(streamed, content))
    legacy = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0,
                                       logprobs=2)
    assert len(legacy.choices[0].logprobs.tokens) == legacy.usage.completion_tokens, legacy
    assert legacy.choices[0].logprobs.text_offset[0] == 0, legacy
    assert all(len(t) <= 2 for t in legacy.choices[0].logprobs.top_logprobs), legacy
    long_prompt = "Tell me about the harbour at dawn. " * 12
    cold = client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=2)
    warm = client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=2)
    assert cold.usage.prompt_tokens_details.cached_tokens == 0, cold.usage
    assert warm.usage.prompt_tokens_details.cached_tokens >= warm.usage.prompt_tokens - 16, warm.usage
    # vLLM's cache_salt: the same prompt under a salt starts from a cold cache;
    # only the same salt hits it again.
    salted = [client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=2,
                                        extra_body={"cache_salt": salt})
              for salt in ("run-a", "run-a", "run-b")]
    assert salted[0].usage.prompt_tokens_details.cached_tokens == 0, salted[0].usage
    assert (salted[1].usage.prompt_tokens_details.cached_tokens
            >= salted[1].usage.prompt_tokens - 16), salted[1].usage
    assert salted[2].usage.prompt_tokens_details.cached_tokens == 0, salted[2].usage
    try:
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=1,
                                  extra_body={"cache_salt": ""})
        raise AssertionError("an empty cache_salt was accepted")
    except openai.BadRequestError as e:
        assert "cache_salt" in str(e), e

    # -- upload, then reference; another tenant's reference is refused ----------------
    image = png()
    up = httpx.post(base + "/mosaic/images", json={"image": data_url(image)}, headers=auth,
                    timeout=60)
    assert up.status_code == 200, up.text
    ref = up.json()["url"]
    assert ref.startswith("mosaic://library/") and len(up.json()["id"]) == 64, up.text
    by_ref = client.chat.completions.create(model=MODEL, messages=image_messages(ref),
                                            max_tokens=5, temperature=0)
    by_bytes = client.chat.completions.create(model=MODEL, messages=image_messages(data_url(image)),
                                              max_tokens=5, temperature=0)
    assert by_ref.choices[0].message.content == by_bytes.choices[0].message.content
    expect_status(404, lambda: other.chat.completions.create(
        model=MODEL, messages=image_messages(ref), max_tokens=5), "another tenant's reference")

    # -- every bad input gets its status ----------------------------------------------
    ok_image = data_url(png())
    chat = lambda **kw: client.chat.completions.create(model=kw.pop("model", MODEL), **kw)
    expect_status(400, lambda: chat(messages=image_messages(ok_image), max_tokens=5,
                                    extra_body={"frobnicate": 1}), "unknown field")
    expect_status(400, lambda: chat(messages=image_messages(ok_image), max_tokens=5, n=2),
                  "n = 2")
    expect_status(400, lambda: chat(messages=image_messages(ok_image), max_tokens=0), "max_tokens 0")
    expect_status(400, lambda: chat(messages=image_messages(ok_image), max_tokens=5,
                                    temperature=5), "temperature 5")
    expect_status(400, lambda: chat(messages=image_messages(ok_image, 17), max_tokens=5),
                  "17 images")
    expect_status(400, lambda: chat(messages=image_messages(data_url(png(header_only=True))),
                                    max_tokens=5), "undecodable image")
    expect_status(400, lambda: chat(messages=image_messages("data:image/gif;base64,R0lG"),
                                    max_tokens=5), "a GIF")
    expect_status(400, lambda: chat(messages=image_messages("https://example.com/cat.png"),
                                    max_tokens=5), "a remote URL")
    expect_status(400, lambda: chat(messages=image_messages(data_url(png(claimed=5000))),
                                    max_tokens=5), "5000x5000 pixels")
    expect_status(413, lambda: chat(messages=image_messages(
        "data:image/png;base64," + "A" * (28 << 20)), max_tokens=5), "an image over 20 MiB")
    if context:
        expect_status(400, lambda: chat(messages=image_messages(ok_image), max_tokens=context),
                      "max_tokens past the context")
    expect_status(400, lambda: chat(messages=[{"role": "user", "content": "x " * 100000}],
                                    max_tokens=5), "a prompt longer than the context")
    expect_status(404, lambda: chat(model="gpt-4o", messages=image_messages(ok_image),
                                    max_tokens=5), "unknown model")
    expect_status(404, lambda: chat(messages=image_messages("mosaic://library/" + "b" * 64),
                                    max_tokens=5), "unknown library id")
    malformed = httpx.post(base + "/chat/completions", content=b'{"model": "builtin:tiny", ',
                           headers={**auth, "Content-Type": "application/json"}, timeout=30)
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    huge = httpx.post(base + "/chat/completions", content=b" " * (33 << 20),
                      headers={**auth, "Content-Type": "application/json"}, timeout=60)
    assert huge.status_code == 413, huge.status_code

    # -- keys ---------------------------------------------------------------------------
    stranger = openai.OpenAI(base_url=base, api_key="sk-wrong-key-0", max_retries=0)
    expect_status(401, lambda: stranger.models.list(), "a wrong key")
    expect_status(401, lambda: stranger.chat.completions.create(
        model=MODEL, messages=image_messages(ok_image), max_tokens=5), "a wrong key on chat")

    # -- /metrics: parses, and its counters moved -----------------------------------------
    after = metrics(base)
    assert value(after, "mosaic:request_success_total", finished_reason="stop") + \
        value(after, "mosaic:request_success_total", finished_reason="length") >= \
        value(before, "mosaic:request_success_total", finished_reason="stop") + \
        value(before, "mosaic:request_success_total", finished_reason="length") + 5
    for name in ("mosaic:prompt_tokens_total", "mosaic:generation_tokens_total",
                 "mosaic:image_tokens_total", "mosaic:time_to_first_token_seconds_count",
                 "mosaic:e2e_request_latency_seconds_count",
                 "mosaic:request_queue_time_seconds_count",
                 "mosaic:vision_encodes_total", "mosaic:prefix_cache_queries_total",
                 "mosaic:prefix_cache_hits_total", "mosaic:cached_prompt_tokens_total",
                 "mosaic:library_lookups_total"):
        assert value(after, name) > value(before, name), (name, value(before, name),
                                                          value(after, name))
    for status in ("400", "401", "404", "413"):
        assert value(after, "mosaic:request_failure_total", status=status) > \
            value(before, "mosaic:request_failure_total", status=status), status
    assert "mosaic:num_requests_waiting" in after and "mosaic:num_requests_running" in after
    # Where requests' time went, per stage: the image requests above were
    # prepared, looked up, encoded and prefilled.
    for stage in ("prepare", "library_lookup", "resolve_images", "vision_encode",
                  "prefill_compute"):
        assert value(after, "mosaic:request_stage_seconds_total", stage=stage) > \
            value(before, "mosaic:request_stage_seconds_total", stage=stage), stage
    # vLLM's names carry the same counts (dashboards built for vLLM).
    for ours, theirs in (("mosaic:prompt_tokens_total", "vllm:prompt_tokens_total"),
                         ("mosaic:generation_tokens_total", "vllm:generation_tokens_total"),
                         ("mosaic:prefix_cache_hits_total", "vllm:prefix_cache_hits_total")):
        assert value(after, theirs, model_name=MODEL) == value(after, ours) > 0, (ours, theirs)
    for reason in ("stop", "length"):
        assert value(after, "vllm:request_success_total", finished_reason=reason,
                     model_name=MODEL) == value(after, "mosaic:request_success_total",
                                                finished_reason=reason), reason
    print("openai SDK test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
