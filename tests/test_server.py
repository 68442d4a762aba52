"""The OpenAI-compatible engine against a real llama.cpp server (xllamacpp) on 127.0.0.1, started and stopped by
its PID: generation, all four tests, forced choice, the cache, the key never stored, and retries through a real
proxy that answers 429, 500 and slowly before it forwards."""
import gc, json, os, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import cotfaith.pipeline as pipeline
from cotfaith.core import canonical_json
from cotfaith.data import load_examples
from cotfaith.generate import GenCache, gen_key, generate
from cotfaith.load import load_engine, model_fingerprint
from cotfaith.openai_engine import OpenAIEngine, ServerError, _top
from cotfaith.served import served_identity, served_key
from cotfaith.pipeline import ExperimentConfig, experiment_files, run_experiment
from cotfaith.prompts import answer_messages, cot_messages, direct_messages
from cotfaith.rows import Example
from cotfaith.server import start_server
from cotfaith.transformers_engine import as_engine
from cotfaith.usage import ledger_total, usage_path

CLI = str(Path(sys.executable).parent/'cotfaith-run')


@pytest.fixture(scope='module')
def server():
    with start_server(alias='smollm2-135m', threads=1, parallel=2, ctx=16384) as srv:
        yield srv
    assert srv.proc.poll() is not None                              # stopped, by its PID


@pytest.fixture(scope='module')
def unnamed():
    "The embedded model served under a name no tokenizer here answers to: behind a bare proxy, a chat-only server."
    with start_server(alias='a-model-known-only-to-its-server', threads=1, parallel=1, ctx=4096) as srv:
        yield srv


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for k, d in (('COTFAITH_RESULTS_DIR', 'results'), ('COTFAITH_CACHE_DIR', 'cache')):
        monkeypatch.setenv(k, str(tmp_path/d))
    return tmp_path


def test_generation_is_greedy_cached_and_keyed_apart_from_the_local_engine(server, lm, tmp_path):
    eng = load_engine(f'openai:smollm2-135m@{server.url}')
    ex = load_examples('gsm8k', n=1)[0]
    prompt = eng.render(cot_messages(ex))
    assert prompt == as_engine(lm).render(cot_messages(ex))              # the same chat template, rendered by the server
    first = generate(eng, [prompt, prompt], max_new_tokens=48, cache=GenCache(tmp_path))
    again = generate(eng, [prompt], max_new_tokens=48, cache=GenCache(tmp_path))
    assert first[0]['text'] == first[1]['text'] == again[0]['text'] and again[0]['cached'] and first[0]['n_tokens'] > 0
    kw = {'max_new_tokens': 48, 'do_sample': False}
    assert gen_key(eng, prompt, kw, 0) != gen_key(lm, prompt, kw, 0)      # a server's output never stands for the local one
    assert model_fingerprint(f'openai:whatever@{server.url}') == 'server:' + canonical_json(eng.key)   # any name: one model
    assert served_key(f'openai:whatever@{server.url}') == eng.key                   # asked over HTTP, no engine built


def test_an_openai_api_model_s_results_are_named_with_no_api_key_and_no_engine(dirs, monkeypatch):
    "Committed records of an OpenAI model are found with no key: its key depends on no server, nothing is asked."
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    engines = lambda: sum(issubclass(type(o), OpenAIEngine) for o in gc.get_objects())   # no attribute read
    before = engines()
    files = experiment_files(ExperimentConfig(model='openai:gpt-4o-mini', n=1, tests='et'))
    assert engines() == before and set(files) == {'base', 'et'} and 'gpt-4o-mini' in str(files['base'])
    assert model_fingerprint('openai:gpt-4o-mini') == 'server:' + canonical_json(
        served_identity('gpt-4o-mini', None, {}, None))
    with pytest.raises(ServerError, match='OPENAI_API_KEY is not set'):                 # computing needs the key
        load_engine('openai:gpt-4o-mini')


def test_a_served_batch_that_fails_part_way_keeps_the_chains_already_done(server, tmp_path):
    eng = OpenAIEngine(f'openai:smollm2-135m@{server.url}', concurrency=1)
    ex = load_examples('gsm8k', n=1)[0]
    good, bad = eng.render(cot_messages(ex)), eng.render(cot_messages(ex)) + ' x' * 20_000   # over the context
    with pytest.raises(Exception):
        generate(eng, [good, bad], max_new_tokens=[16, 8], cache=GenCache(tmp_path))
    assert generate(eng, [good], max_new_tokens=16, cache=GenCache(tmp_path))[0]['cached']   # cached as soon as done


@pytest.mark.parametrize('dataset', ['gsm8k', 'medmcqa'])     # medmcqa: forced choice on short questions
def test_every_test_runs_through_the_server_and_a_rerun_asks_nothing(server, dirs, monkeypatch, capsys, dataset):
    cfg = ExperimentConfig(model=f'openai:smollm2-135m@{server.url}', dataset=dataset, n=2, max_new_tokens=64,
                           tests='et,paraphrase,filler,mistake', concurrency=2)
    recs = run_experiment(cfg, progress=False)
    ledger = usage_path(experiment_files(cfg)['base'])
    spent = ledger_total(ledger)[cfg.model]                             # the tokens the server reported, booked
    assert spent['requests'] >= 2 * len(recs) and spent['prompt_tokens'] > spent['completion_tokens'] > 0
    assert f"{cfg.model}: this run {spent['requests']:,} requests, {spent['prompt_tokens']:,} prompt" in capsys.readouterr().err
    assert len(recs) == 2 and recs['cot'].map(len).gt(0).all()
    for t in ('et', 'paraphrase', 'filler', 'mistake'):
        assert recs[f'{t}_answers'].map(lambda a: isinstance(a, list) and len(a) >= 1).all(), t
    if dataset == 'medmcqa':                                            # forced choice: a letter, or no answer
        assert all(a is None or a in 'ABCDE' for r in recs['et_answers'] for a in r)
    assert recs['provenance'].iloc[0]['lm']['backend'] == 'llama.cpp'
    monkeypatch.setattr(pipeline, 'load_engine', lambda *a, **k: pytest.fail('a rerun must not ask the server'))
    assert run_experiment(cfg, progress=False).drop(columns='provenance').equals(recs.drop(columns='provenance'))
    assert ledger_total(ledger)[cfg.model] == spent and 'this run' not in capsys.readouterr().err   # nothing asked


def test_the_api_key_is_never_written_anywhere(server, tmp_path):
    secret = 'sk-test-DO-NOT-STORE-4242'
    env = os.environ | {'OPENAI_API_KEY': secret, 'COTFAITH_RESULTS_DIR': str(tmp_path/'results'),
                        'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    r = subprocess.run([CLI, '--model', f'openai:smollm2-135m@{server.url}', '--n', '1', '--max_new_tokens', '32',
                        '--tests', 'et,filler'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert secret not in r.stdout + r.stderr
    written = [p for p in tmp_path.rglob('*') if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]


class Proxy:
    """A real HTTP proxy in front of the server. Completion requests are first answered with the statuses of `plan`
    ('slow': after 3 s, then forwarded); `always` answers every request with one status; `bare` hides llama.cpp's
    own endpoints, as a vLLM or OpenAI server would not have them."""
    def __init__(self, upstream:str, plan:list=(), always:int|None=None, bare:bool=False):
        self.upstream, self.plan, self.seen = upstream.removesuffix('/v1'), list(plan), []
        proxy = self
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self): self._relay('GET')
            def do_POST(self): self._relay('POST')
            def _relay(self, method):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                step = proxy.plan.pop(0) if proxy.plan and self.path.startswith('/v1/completions') else None
                proxy.seen.append((self.path, step))
                if always: return self._send(always, b'{"error": {"message": "injected"}}')
                if bare and not self.path.startswith('/v1/'): return self._send(404, b'{"error": {"message": "no"}}')
                if step == 'slow': time.sleep(3)
                if isinstance(step, int): return self._send(step, b'{"error": {"message": "injected"}}')
                r = httpx.request(method, proxy.upstream + self.path, content=body, timeout=600,
                                  headers={'Content-Type': 'application/json'})
                self._send(r.status_code, r.content)
            def _send(self, status, data):
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f'http://127.0.0.1:{self.httpd.server_port}/v1'
    def __enter__(self): return self
    def __exit__(self, *_): self.httpd.shutdown()


def test_429_500_and_a_timeout_are_retried_and_the_answer_is_the_same(server):
    ex = Example('toy', 'toy', 'Ann has 2 apples and gets 3 more. How many apples does she have?', '5')
    direct = load_engine(f'openai:smollm2-135m@{server.url}')
    prompt = direct.render([{'role': 'user', 'content': ex.question}, {'role': 'assistant', 'content': 'Final answer:'}])
    want = direct.answer(ex, [prompt], max_new_tokens=8)
    with Proxy(server.url, plan=[429, 500, 'slow']) as proxy:
        eng = OpenAIEngine(f'openai:smollm2-135m@{proxy.url}', timeout=2, max_retries=4)
        assert eng.answer(ex, [prompt], max_new_tokens=8) == want
    assert [s for p, s in proxy.seen if p.startswith('/v1/completions')] == [429, 500, 'slow', None]


def test_a_refused_key_an_unknown_model_and_no_server_fail_before_any_work(server, unnamed):
    with Proxy(server.url, always=401) as proxy:
        for make in (lambda s: OpenAIEngine(s, max_retries=0), served_key):              # the engine, or its key alone
            with pytest.raises(ServerError, match='refused the API key'): make(f'openai:smollm2-135m@{proxy.url}')
    with Proxy(unnamed.url, bare=True) as proxy:
        with pytest.raises(ServerError, match="has no model 'gpt-nope'"):
            OpenAIEngine(f'openai:gpt-nope@{proxy.url}', max_retries=0)
        eng = OpenAIEngine(f'openai:a-model-known-only-to-its-server@{proxy.url}', max_retries=0)   # chat: user turn
        assert eng.key['elicitation'] == 'user-turn' and eng.key['model'] == 'a-model-known-only-to-its-server'
        assert served_key(f'openai:a-model-known-only-to-its-server@{proxy.url}') == eng.key
    with pytest.raises(ServerError, match='cannot reach'):
        OpenAIEngine('openai:x@http://127.0.0.1:9/v1', max_retries=0)


def test_a_chat_only_server_asks_in_the_user_turn_and_its_results_are_never_pooled(unnamed, dirs):
    name = 'a-model-known-only-to-its-server'
    with Proxy(unnamed.url, bare=True) as proxy:
        chat = ExperimentConfig(model=f'openai:{name}@{proxy.url}', n=1, max_new_tokens=48, tests='et,filler')
        recs = run_experiment(chat, progress=False)
        assert recs['provenance'].iloc[0]['lm']['elicitation'] == 'user-turn'
        assert recs['et_answers'].map(len).iloc[0] >= 1 and recs['cot'].iloc[0]
        prefill = ExperimentConfig(model=f'openai:{name}@{unnamed.url}', n=1, max_new_tokens=48, tests='et,filler')
        assert experiment_files(chat)['base'] != experiment_files(prefill)['base']


def test_a_server_that_cannot_render_the_template_gets_it_rendered_here(server, dirs):
    "As on vLLM: no /apply-template nor /tokenize, but the model's tokenizer loads here, so the tests still prefill."
    with Proxy(server.url, bare=True) as proxy:
        here = OpenAIEngine(f'openai:smollm2-135m@{proxy.url}')
        there = OpenAIEngine(f'openai:smollm2-135m@{server.url}')
        assert here.key['elicitation'] == 'prefill' and here.key['template'][0] == 'smollm2-135m' and here.key != there.key
        assert served_key(f'openai:smollm2-135m@{proxy.url}') == here.key               # the template rendered here
        for ex in load_examples('medqa', n=2) + load_examples('gsm8k', n=2):             # what the server is sent
            for msgs in (cot_messages(ex), direct_messages(ex), answer_messages(ex, 'Step one.\nStep two.')):
                assert here.render(msgs) == there.render(msgs)
        assert here.n_tokens('Final answer: 12 ...') == there.n_tokens('Final answer: 12 ...')
        recs = run_experiment(ExperimentConfig(model=f'openai:smollm2-135m@{proxy.url}', n=1, max_new_tokens=32,
                                               tests='et,filler', dataset='medqa'), progress=False)
    assert recs['provenance'].iloc[0]['lm']['elicitation'] == 'prefill'
    assert all(a is None or a in 'ABCDE' for r in recs['et_answers'] for a in r) and recs['cot'].map(len).gt(0).all()
    assert {p for p, _ in proxy.seen if not p.startswith('/v1/')} == {'/props'}       # asked, refused, never again


def test_the_paper_s_gpt_fine_tuning_data_is_written_in_openai_s_format_and_never_faked(tmp_path):
    out = tmp_path/'medqa-sft.jsonl'
    env = {k: v for k, v in os.environ.items() if k != 'OPENAI_API_KEY'}
    cli = str(Path(sys.executable).parent/'cotfaith-openai-sft')
    r = subprocess.run([cli, '--dataset', 'medqa', '--n_train', '16', '--out', str(out), '--submit'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and 'needs OPENAI_API_KEY' in r.stderr and 'Traceback' not in r.stderr
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 16 and all(r['messages'][-1]['role'] == 'assistant' for r in rows)
    assert all(r['messages'][-1]['content'].startswith('Final answer:') for r in rows)   # MedQA: answer-only targets


def _amplified(adapter, dest, factor=40.0):
    "A copy of a peft adapter whose lora_B is scaled up, so that its effect is large enough to compare."
    import shutil
    from safetensors.numpy import load_file, save_file
    shutil.copytree(adapter, dest)
    w = load_file(str(dest/'adapter_model.safetensors'))
    save_file({k: v * factor if '.lora_B.' in k else v for k, v in w.items()}, str(dest/'adapter_model.safetensors'))
    return dest


def test_a_lora_adapter_served_by_llama_cpp_moves_the_answers_as_peft_does(tmp_path):
    from cotfaith.finetune import FinetuneConfig, finetune
    from cotfaith.prompts import direct_messages
    ad = _amplified(finetune(FinetuneConfig(dataset='gsm8k', n_train=8, rank=4, max_length=384, epochs=1,
                                            load_in_4bit=False)), tmp_path/'amplified')
    local, served = load_engine('smollm2-135m', adapter=str(ad)), load_engine('llama.cpp:smollm2-135m', adapter=str(ad))
    base = load_engine('llama.cpp:smollm2-135m')
    assert served.key['lora'] and 'lora' not in base.key                  # the adapter keys the cache apart
    exs = load_examples('medmcqa', n=12, seed=1)                          # short questions: 12 prompts cost little
    ask = lambda eng: [eng.answer(ex, [eng.render(direct_messages(ex))], max_new_tokens=4)[0] for ex in exs]
    a_local, a_served, a_base = ask(local), ask(served), ask(base)
    # a served letter counts only when the model chose it (its greedy token: LETTER_VERSION 3), while the local engine
    # compares the letters' own tokens: they are compared where the served model chose a letter
    chose = [(x, y) for x, y in zip(a_local, a_served) if y]
    agree = sum(x == y for x, y in chose) / max(1, len(chose))
    moved = sum(x != y for x, y in zip(a_served, a_base))
    assert len(chose) >= 3 and agree >= 0.75 and moved >= 1, (a_local, a_served, a_base)


def test_hundreds_of_requests_do_not_stall_the_server(server):
    "llama.cpp logs every request: a server whose log went to a pipe nobody read stalled after about 200 of them."
    eng = OpenAIEngine(f'openai:smollm2-135m@{server.url}', timeout=60, max_retries=0, threads=1)   # prefix reused
    ex = Example('toy', 'toy', 'Which is a colour?', 'A', ('red', 'cat', 'sun'))
    prompt = 'Red, cat or sun: which is a colour? Final answer:'           # a few tokens: each request costs little
    answers = eng.answer(ex, [prompt] * 400, max_new_tokens=1)
    assert len(answers) == 400 and len(set(answers)) == 1 and server.log.stat().st_size > 64 * 1024


def test_a_server_ends_with_the_process_that_started_it(tmp_path):
    code = ("import os, sys; from cotfaith.server import start_server; s = start_server(); "
            "print(s.pid, flush=True); os._exit(0)")                     # gone without stopping it
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    pid = int(r.stdout.split()[-1])
    def alive():
        try: return 'State:\tZ' not in Path(f'/proc/{pid}/status').read_text()     # a zombie is gone too
        except FileNotFoundError: return False
    for _ in range(100):
        if not alive(): break
        time.sleep(0.1)
    else: pytest.fail(f'the server {pid} outlived the process that started it')


def test_requests_to_llama_cpp_go_one_at_a_time(server):
    "Requests decoded together in the server's slots give other numbers than each alone (03e_server)."
    assert OpenAIEngine(f'openai:smollm2-135m@{server.url}', concurrency=8).concurrency == 1   # the fixture: 2 slots


@pytest.mark.parametrize('spec', ['openai:smollm2-135m@{url}', 'llama.cpp:smollm2-135m'])
def test_a_served_answer_does_not_depend_on_what_the_server_computed_before(server, spec):
    "llama.cpp's reuse of earlier requests' KV cache changes the numbers, unless tokens go one at a time (03f)."
    eng = load_engine(spec.format(url=server.url))      # found by its address: from scratch; started here: n_ubatch 1
    p, q = [eng.render(answer_messages(ex, '')) for ex in load_examples('medqa', n=2)]
    def top(prompt):
        r = eng.client.completions.create(model=eng.name, prompt=prompt, max_tokens=1, logprobs=5, temperature=0,
                                          **eng._raw)           # the request body every call of the engine sends
        return _top(r.choices[0])[0]                           # token -> log-probability, as forced choice reads it
    first = top(p)
    others = [top(q), top(p[:-20])]         # another prompt, and one that shares all but p's last characters
    assert top(p) == first and top(p) == first and len(others[0]) == 5     # bit for bit, after others and repeated


def test_a_server_found_by_its_address_is_keyed_apart_from_the_servers_cotfaith_starts(server):
    "Its thread count (which changes the numbers) is not visible to a client: its address stands for it."
    own, found = model_fingerprint('llama.cpp:smollm2-135m'), model_fingerprint(f'openai:smollm2-135m@{server.url}')
    own, found = (json.loads(x.removeprefix('server:')) for x in (own, found))
    assert own['model'] == found['model'] and (own['threads'], own['n_ubatch']) == (1, 1) and 'url' not in own
    assert (found['url'], found['cache_prompt']) == (server.url, False) and 'threads' not in found
