"""Batching questions into HITs and rendering the worker page.

Worker-page contract (shared by the renderer, the MTurk backend and the local
MTurk-compatible endpoint's simulated workers):

- The HTMLQuestion page holds one element per question::

      <fieldset class="cp-question" data-question-id="QID" data-mask-id="MASK_ID"
                data-category-id="CID"> ... </fieldset>

  ``QID`` is :attr:`crowdprop.crowd.base.Question.question_id`; ``MASK_ID`` is the
  mask's ``mask_id`` column of masks.parquet. Gold questions look exactly like
  the others on the page (workers must not tell them apart).
- The form posts to ``turkSubmitTo + "/mturk/externalSubmit"`` with field
  ``assignmentId`` and one field per question, named ``QID``, valued ``yes`` or ``no``.
- MTurk returns the answers as QuestionFormAnswers XML: one ``<Answer>`` per form
  field, ``<QuestionIdentifier>QID</QuestionIdentifier><FreeText>yes</FreeText>``.
"""
