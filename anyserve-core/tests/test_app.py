import asyncio

import pytest

from anyserve import AnyServe, Capability, ModelInferRequest, ModelInferResponse


def test_capability_decorator_registers_plain_and_async_handlers():
    app = AnyServe()

    @app.capability(type="echo")
    def echo(request):
        return ModelInferResponse(id=request.id)

    @app.capability(type="chat", model="llama-70b")
    async def chat(request, context):
        return ModelInferResponse()

    @app.capability(type="chat", stream=True)
    def chat_stream(request, context, stream):
        pass

    @app.capability(type="tokens", stream=True)
    def tokens(request, stream):
        pass

    assert echo(ModelInferRequest(id="7")).id == "7"  # the decorator returns the function
    by_name = {h.func.__name__: h for h in app.handlers}
    assert by_name["echo"].arity == 1 and not by_name["echo"].is_async
    assert by_name["chat"].arity == 2 and by_name["chat"].is_async
    assert by_name["chat_stream"].stream and by_name["chat_stream"].arity == 3
    assert by_name["tokens"].arity == 2
    assert asyncio.run(chat(ModelInferRequest(), None)) == ModelInferResponse()
    assert app.capabilities() == [
        Capability(type="echo"),
        Capability(type="chat", model="llama-70b"),
        Capability(type="chat"),
        Capability(type="tokens"),
    ]


def test_candidates_use_every_query_key_and_the_kind():
    app = AnyServe()
    app.add_handler({"type": "chat", "model": "a", "region": "eu"}, lambda r: None)
    app.add_handler({"type": "chat", "model": "a"}, lambda r, c, s: None, stream=True)
    assert [h.capability["region"] for h in app.candidates({"type": "chat", "region": "eu"}, stream=False)] == ["eu"]
    assert list(app.candidates({"type": "chat", "region": "us"}, stream=False)) == []
    assert len(list(app.candidates({"type": "chat"}, stream=True))) == 1


@pytest.mark.parametrize(
    ("stream", "func"),
    [
        (False, lambda: None),
        (False, lambda a, b, c: None),
        (True, lambda a: None),
        (True, lambda a, b, c, d: None),
    ],
)
def test_wrong_handler_shapes_are_refused_at_decoration(stream, func):
    app = AnyServe()
    with pytest.raises(TypeError, match="positional parameters"):
        app.capability(type="x", stream=stream)(func)


def test_capability_needs_attributes_and_no_duplicates():
    app = AnyServe()
    with pytest.raises(TypeError, match="at least one attribute"):
        app.capability()
    app.capability(type="x")(lambda r: None)
    with pytest.raises(ValueError, match="already has a handler"):
        app.capability(type="x")(lambda r: None)
    app.capability(type="x", stream=True)(lambda r, s: None)  # a stream handler may share it


def test_handler_describe_marks_streams():
    app = AnyServe()
    h = app.add_handler({"type": "chat"}, lambda r, s: None, stream=True)
    assert h.describe() == {"type": "chat", "stream": True}
