// Otter dashboard: progressive enhancement only. Every page works without this file for
// reading; it adds confirmations before destructive forms (and, on the pages that have them,
// live progress and upload progress). No inline script anywhere: the CSP forbids it.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
