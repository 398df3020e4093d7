// Progressive enhancement of the upload form: the same multipart POST, sent with
// XMLHttpRequest so the page can show progress. Without JavaScript the form submits normally.
const form = document.querySelector('form[data-module="accord-upload"]');

function messageFor(status, body) {
  if (body && body.error && body.error.message) return body.error.message;
  if (status === 413) return "The file is too large to send through Accord. Nothing was stored.";
  if (status === 403) return "You cannot send data under this request.";
  if (status === 409) return "Data can no longer be sent under this request.";
  return "The file was not sent. Nothing was stored: try again.";
}

if (form && window.XMLHttpRequest && window.FormData) {
  const progress = form.querySelector(".accord-upload-progress");
  const bar = form.querySelector(".accord-upload-progress__bar");
  const text = form.querySelector(".accord-upload-progress__text");
  const error = form.querySelector(".accord-upload-error");
  const errorText = form.querySelector(".accord-upload-error__text");
  const button = form.querySelector('button[type="submit"], input[type="submit"]');

  form.addEventListener("submit", (event) => {
    const file = form.querySelector('input[type="file"]');
    if (!file || !file.files || file.files.length === 0) return; // let the server say what is missing
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action || window.location.href);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const percent = Math.floor((e.loaded / e.total) * 100);
      bar.value = percent;
      text.textContent = `${percent}% sent`;
    });
    request.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (_) { body = null; }
      if (request.status === 201 && body && body.location) {
        text.textContent = "Sent. Opening the transfer…";
        window.location.assign(body.location);
        return;
      }
      progress.hidden = true;
      if (button) button.disabled = false;
      errorText.textContent = messageFor(request.status, body);
      error.hidden = false;
      error.focus();
    });
    request.addEventListener("error", () => {
      progress.hidden = true;
      if (button) button.disabled = false;
      errorText.textContent = messageFor(0, null);
      error.hidden = false;
    });
    error.hidden = true;
    progress.hidden = false;
    bar.value = 0;
    text.textContent = "0% sent";
    if (button) button.disabled = true;
    request.send(new FormData(form));
  });
}
