"""Public pages (no caching headers: Django's default), a CSRF-protected contact form, and a
404 for unknown articles. Login, logout and the admin are Django's own (urls.py)."""
from django import forms
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.csrf import csrf_failure as django_csrf_failure

ARTICLES = 20
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. "
)


def home(request):
    articles = [{"n": n, "title": f"Article number {n}"} for n in range(1, ARTICLES + 1)]
    return render(request, "home.html", {"articles": articles, "intro": LOREM * 6})


def article(request, n):
    if not 1 <= n <= ARTICLES:
        raise Http404("no such article")
    paragraphs = [f"Paragraph {i} of article {n}. " + LOREM * 3 for i in range(1, 9)]
    return render(request, "article.html", {"n": n, "paragraphs": paragraphs})


class ContactForm(forms.Form):
    name = forms.CharField(max_length=100)
    message = forms.CharField(widget=forms.Textarea, max_length=2000)


def contact(request):
    if request.method == "POST":
        form = ContactForm(request.POST)
        if form.is_valid():
            return redirect("contact-thanks")
    else:
        form = ContactForm()
    return render(request, "contact.html", {"form": form})


def contact_thanks(request):
    return render(request, "thanks.html")


def csrf_failure(request, reason=""):
    request._realapp_csrf_failure = reason
    return django_csrf_failure(request, reason=reason)
