"""The official `openai` Python SDK against `mosaic serve` (builtin:tiny).

Run by openai_sdk_test.sh, which starts the server and passes its base URL
and an API key in MOSAIC_BASE_URL / MOSAIC_API_KEY.
"""
import base64
import os
import struct
import sys
import zlib

import openai


def random_png(size=56):
    raw = b"".join(b"\x00" + os.urandom(size * 3) for _ in range(size))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    base = os.environ["MOSAIC_BASE_URL"]
    key = os.environ["MOSAIC_API_KEY"]
    client = openai.OpenAI(base_url=base, api_key=key, timeout=60, max_retries=0)

    models = client.models.list()
    assert models.data[0].id == "builtin:tiny", models

    url = "data:image/png;base64," + base64.b64encode(random_png()).decode()
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What is in the image?"}]}]
    whole = client.chat.completions.create(model="builtin:tiny", messages=messages,
                                           max_tokens=5, temperature=0)
    assert whole.choices[0].finish_reason in ("stop", "length"), whole
    assert whole.usage.completion_tokens >= 1, whole.usage
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    text = ""
    usage = None
    finish = None
    for chunk in client.chat.completions.create(model="builtin:tiny", messages=messages,
                                                max_tokens=5, temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens

    completion = client.completions.create(model="builtin:tiny", prompt="Hello", max_tokens=3)
    assert completion.choices[0].finish_reason in ("stop", "length")

    stranger = openai.OpenAI(base_url=base, api_key="sk-wrong-key-0", max_retries=0)
    try:
        stranger.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    try:
        client.chat.completions.create(model="builtin:tiny", messages=messages, max_tokens=5,
                                       extra_body={"frobnicate": 1})
        raise AssertionError("an unknown field was accepted")
    except openai.BadRequestError:
        pass
    print("openai SDK test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
