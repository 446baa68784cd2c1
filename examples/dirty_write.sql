-- Dirty write (G0) at read committed: prevented by blocking.
--
-- T2 wants to overwrite a row T1 has written but not committed. PostgreSQL
-- makes T2 wait for T1's row lock, so the two transactions' writes are never
-- interleaved: both rows end up with the values of the transaction that
-- committed last (T2), never a mix.
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);

begin; set transaction isolation level read committed; -- T1
begin; set transaction isolation level read committed; -- T2
update test set value = 11 where id = 1; -- T1
update test set value = 12 where id = 1; -- T2, BLOCKS
update test set value = 21 where id = 2; -- T1
commit; -- T1. T2 unblocks: UPDATE 1
select * from test order by id; -- T3. Shows 1 => 11, 2 => 21
update test set value = 22 where id = 2; -- T2
commit; -- T2
select * from test order by id; -- T3. Shows 1 => 12, 2 => 22
