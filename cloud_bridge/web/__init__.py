"""The web portal behind `meter-bridge web`: residents see their own meters, bills and points and
correct a reading; operators see the fleet. Starlette + Jinja2, every asset in this package.

How to add pages (e.g. the operators' fleet page):
1. Put the routes in a module of this package with a module-level `routes: list[BaseRoute]`
   (see `operator.py`); add the module to `app.PAGE_MODULES` if it is a new one. The factory
   `app.create_app(engine, config)` mounts them all; `/static` serves `static/`.
2. Start every handler with `user = require_user(request, role="operator")` (or "resident"): nobody
   signed in gets the sign-in page, the other role gets the same 404 as a missing page.
3. Answer with `render(request, "page.html", **context)`: templates extend `base.html` (override
   `{% block operator_nav %}` for the operators' menu) and get `user`, `csrf_token`, `fmt` (local
   dates and numbers), `words`, `lang`. Use `not_found(request)` or `raise NotFound()` for anything
   missing or not the visitor's. Shared state: `web(request).engine`, `.config`, `.now()`;
   `read_only(engine)` for reads.
4. Every POST needs the hidden `<input type="hidden" name="csrf_token" value="{{ csrf_token }}">`
   (or an `X-CSRF-Token` header); the middleware refuses it otherwise, before any route runs.
   Routes that machines call without a session (e.g. /metrics, /healthz) use GET.
5. Texts: `{{ _("English text") }}` in templates, `gettext(request).gettext("…")` in code, and the
   Russian in `locale/ru/LC_MESSAGES/messages.po` (a test fails for a missing one).
"""
